"""Numerical constants shared by the library, the numpy-only modules included (importing this
needs neither TensorFlow nor numpy)."""

import math

#: log(2 pi), the constant of every Gaussian log-density: log N(x; mu, s^2) =
#: -(x - mu)^2 / (2 s^2) - log s - LOG_2PI / 2
LOG_2PI = math.log(2.0 * math.pi)
