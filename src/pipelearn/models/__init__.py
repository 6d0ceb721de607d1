"""Model zoo and model splitting: every model is an ``nn.Sequential`` of blocks keyed "0".."L-1".

Build a zoo model and split it after ``p`` blocks (device part: blocks 0..p-1, server part: the rest)::

    from pipelearn.models import build_model, num_blocks, split

    model = build_model("vgg5", (1, 28, 28), 10)
    device_part, server_part = split(model, 2)  # any p in 0..num_blocks(model)

A user's own model splits the same way, as long as it is an ``nn.Sequential`` (or a list of
modules) applying its children in order; its children are re-keyed "0".."L-1"::

    net = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 16, 3), act=nn.ReLU(),
                                    flat=nn.Flatten(), fc=nn.Linear(16 * 30 * 30, 10)))
    device_part, server_part = split(net, 2)  # device: "0" conv, "1" act; server: "2" flat, "3" fc
    assert torch.equal(server_part(device_part(x)), net(x))

The parts share the model's modules, so training them trains the model. A run trains a user's own network by
naming a function that returns such blocks (a :class:`ModelFactory`) as MODULE:FUNCTION wherever a model name goes.
"""

from pipelearn.models.blocks import (
    BasicBlock,
    Bottleneck,
    ConvBlock,
    DenseBlock,
    InvertedResidual,
    SqueezeExcite,
)
from pipelearn.models.mobilenet import mobilenetv3_large, mobilenetv3_small
from pipelearn.models.registry import (
    MODEL_NAMES,
    ModelError,
    ModelFactory,
    build_model,
    canonical_model_name,
    check_fits,
)
from pipelearn.models.resnet import resnet18, resnet50
from pipelearn.models.splitting import as_blocks, num_blocks, split
from pipelearn.models.vgg import vgg5, vgg8, vgg11, vgg16

__all__ = [
    "MODEL_NAMES",
    "BasicBlock",
    "Bottleneck",
    "ConvBlock",
    "DenseBlock",
    "InvertedResidual",
    "ModelError",
    "ModelFactory",
    "SqueezeExcite",
    "as_blocks",
    "build_model",
    "canonical_model_name",
    "check_fits",
    "mobilenetv3_large",
    "mobilenetv3_small",
    "num_blocks",
    "resnet18",
    "resnet50",
    "split",
    "vgg5",
    "vgg8",
    "vgg11",
    "vgg16",
]
