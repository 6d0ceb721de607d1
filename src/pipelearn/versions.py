"""Weight versions and gradient banks: what lets a mini-batch start before the one before it has stepped.

Under staleness 1 a lane steps for one mini-batch while the next is already in flight. A device's backward must
use the weights its forward used, so a forward that a step will overtake runs on a copy of the weights it started
from (`WeightStash`); the server trains a micro-batch forward and backward at once, so it only keeps each
mini-batch's gradients apart until that mini-batch's step (`GradientBank`). Without staleness neither copies
anything: every forward, backward and step is what it always was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.func import functional_call

from pipelearn.schedule import Action, Op

Grads = dict[str, torch.Tensor | None]


def overtaken(lane: Sequence[Action]) -> set[int]:
    """The iterations of a device lane whose backward passes come after another iteration's step."""
    open_: set[int] = set()
    out: set[int] = set()
    for action in lane:
        key = action.key
        if key.op is Op.FORWARD:
            open_.add(key.iteration)
        elif key.op is Op.STEP:
            open_.discard(key.iteration)
            out |= open_
    return out


class WeightStash:
    """The weights that each overtaken iteration's forward used, kept until its step (then let go)."""

    def __init__(self, part: nn.Module, overtaken: set[int]) -> None:
        self.part = part
        self.overtaken = overtaken
        self._versions: dict[int, dict[str, torch.Tensor]] = {}

    def forward(self, iteration: int, x: torch.Tensor) -> torch.Tensor:
        """The part's output on x, on the weights the iteration started from."""
        if iteration not in self.overtaken:
            return self.part(x)
        if iteration not in self._versions:  # its first micro-batch: the weights as they stand now
            self._versions[iteration] = {
                name: p.detach().clone().requires_grad_(p.requires_grad) for name, p in self.part.named_parameters()
            }
        return functional_call(self.part, self._versions[iteration], (x,))

    def settle(self, iteration: int) -> None:
        """Before the iteration's step: its gradients onto the part's own parameters, and its copy let go."""
        version = self._versions.pop(iteration, None)
        if version is not None:
            for name, p in self.part.named_parameters():
                p.grad = version[name].grad

    def held_bytes(self) -> int:
        """Bytes of the weight copies held now."""
        return sum(t.numel() * t.element_size() for v in self._versions.values() for t in v.values())


class GradientBank:
    """Each iteration's gradients of a part: in the parameters' .grad while they are the only ones, set apart while
    a later iteration's accumulate."""

    def __init__(self, part: nn.Module) -> None:
        self.part = part
        self._current: int | None = None
        self._banked: dict[int, Grads] = {}

    def before_train(self, iteration: int) -> None:
        """Make room for the gradients of a micro-batch of `iteration`."""
        if self._current not in (None, iteration):
            self._banked[self._current] = self._take()
        self._current = iteration

    def step(self, iteration: int, optimizer: torch.optim.Optimizer) -> None:
        """Apply `iteration`'s gradients with `optimizer`, leaving any later iteration's as they were."""
        if self._current == iteration:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            self._current = None
            return
        later = self._take()
        self._put(self._banked.pop(iteration, {}))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self._put(later)

    def _take(self) -> Grads:
        grads = {name: p.grad for name, p in self.part.named_parameters()}
        for p in self.part.parameters():
            p.grad = None
        return grads

    def _put(self, grads: Grads) -> None:
        for name, p in self.part.named_parameters():
            p.grad = grads.get(name)


class HeldMemory:
    """Bytes a device holds for its part: what each forward in flight saved for its backward (the part's own
    parameters not counted), with the weight copies held beside them; `peak_bytes` is the most at any time."""

    def __init__(self, part: nn.Module) -> None:
        self.part = part
        self.peak_bytes = 0
        self._held: dict[tuple[int, int], int] = {}

    @contextlib.contextmanager
    def holding(self, microbatch: tuple[int, int], copies_bytes: int) -> Iterator[None]:
        """Count what the forward in the with-block saves for its backward, as held by `microbatch`."""
        own = {p.untyped_storage().data_ptr() for p in self.part.parameters()}
        seen: set[int] = set()
        saved = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal saved
            storage = t.untyped_storage()
            if storage.data_ptr() not in own and storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                saved += storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield
        self._held[microbatch] = saved
        self.peak_bytes = max(self.peak_bytes, sum(self._held.values()) + copies_bytes)

    def release(self, microbatch: tuple[int, int]) -> None:
        """The micro-batch's backward is done: what it held is freed."""
        self._held.pop(microbatch, None)
