"""Data -> task streams."""

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

__all__ = ["BENCHMARKS", "ArrayDataset", "Batch", "BatchLoader", "DataError", "InputSpec", "ReturnScale",
           "StreamConfig", "Task",
           "TaskData", "TaskStream", "build_stream", "load_digits", "load_fashion_mnist", "permuted",
           "rotated", "split"]
