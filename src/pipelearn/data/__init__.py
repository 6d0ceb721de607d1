"""Data sets, partitioning across devices, transforms and mini-batching for PipeLearn."""

from pipelearn.data.batches import iterate_batches, num_batches
from pipelearn.data.cifar import load_cifar10, load_cifar100
from pipelearn.data.dataset import SPLITS, Dataset, DatasetFactory, DataSplits, Split
from pipelearn.data.download import download_and_extract, download_file, md5sum
from pipelearn.data.errors import DatasetError
from pipelearn.data.idx import parse_idx, read_idx
from pipelearn.data.mnist import DEBIAN_FASHION_MNIST_DIR, load_fashion_mnist, load_idx_dataset, load_mnist
from pipelearn.data.partition import partition_dirichlet, partition_iid, select_subset
from pipelearn.data.paths import default_data_dir
from pipelearn.data.registry import DATASET_NAMES, canonical_name, dataset_info, load_dataset, load_plugin_splits
from pipelearn.data.saved import load_saved, save_dataset
from pipelearn.data.svhn import load_svhn
from pipelearn.data.synthetic import SyntheticSpec, load_synthetic, synthetic_dataset
from pipelearn.data.transforms import (
    AUGMENTATION,
    NORMALIZATION,
    Augment,
    augment_for,
    normalization_for,
    normalize,
    random_crop,
    random_hflip,
)

__all__ = [
    "AUGMENTATION",
    "DATASET_NAMES",
    "DEBIAN_FASHION_MNIST_DIR",
    "NORMALIZATION",
    "SPLITS",
    "Augment",
    "DataSplits",
    "Dataset",
    "DatasetError",
    "DatasetFactory",
    "Split",
    "SyntheticSpec",
    "augment_for",
    "canonical_name",
    "dataset_info",
    "default_data_dir",
    "download_and_extract",
    "download_file",
    "iterate_batches",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_fashion_mnist",
    "load_idx_dataset",
    "load_mnist",
    "load_plugin_splits",
    "load_saved",
    "load_svhn",
    "load_synthetic",
    "md5sum",
    "normalization_for",
    "normalize",
    "num_batches",
    "parse_idx",
    "partition_dirichlet",
    "partition_iid",
    "random_crop",
    "random_hflip",
    "read_idx",
    "save_dataset",
    "select_subset",
    "synthetic_dataset",
]
