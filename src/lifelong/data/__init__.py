"""Data -> task streams."""

from lifelong.data.files import Cut, file_stream
from lifelong.data.spec import DataSpec, SpecError
from lifelong.data.streams import BENCHMARKS, StreamConfig, build_stream
from lifelong.data.task import (
    ArrayDataset,
    Batch,
    BatchLoader,
    InputSpec,
    ReturnScale,
    Task,
    TaskData,
    TaskStream,
)
from lifelong.data.vision import DataError, load_digits, load_fashion_mnist, permuted, rotated, split

__all__ = ["BENCHMARKS", "ArrayDataset", "Batch", "BatchLoader", "Cut", "DataError", "DataSpec", "InputSpec",
           "ReturnScale", "SpecError", "StreamConfig", "Task", "TaskData", "TaskStream", "build_stream", "file_stream",
           "load_digits", "load_fashion_mnist", "permuted", "rotated", "split"]
