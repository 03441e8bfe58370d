"""The type alias of the library's annotations. Importing this needs neither TensorFlow nor
numpy: the alias is a string that only type checkers (and readers) resolve."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    import numpy as np
    import tensorflow as tf

__all__ = ["TensorLike"]

#: what a method that converts its input to a tensor accepts (``tf.convert_to_tensor``,
#: ``bijector_layer.as_float_tensor``): a tensor or a variable, a numpy array or scalar, a
#: Python number, or a nested sequence of them
TensorLike: TypeAlias = (
    "tf.Tensor | tf.Variable | np.ndarray | np.number | float | Sequence[TensorLike]"
)
