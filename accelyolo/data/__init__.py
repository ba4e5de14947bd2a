"""The data pipeline: data.yaml, checked labels with a JSON cache, augmentation, loaders, demo data."""

from accelyolo.data.dataset import YoloDataset, build_report, validation_split
from accelyolo.data.demo import demo_data_yaml, generate_demo
from accelyolo.data.loader import build_dataloader, collate_fn, to_model_input, validation_loader
from accelyolo.data.spec import DataConfigError, DataSpec, load_data_yaml

__all__ = [
    "DataConfigError",
    "DataSpec",
    "YoloDataset",
    "build_dataloader",
    "build_report",
    "collate_fn",
    "demo_data_yaml",
    "generate_demo",
    "load_data_yaml",
    "to_model_input",
    "validation_loader",
    "validation_split",
]
