"""Imported once by the case forkserver, so that every forked case process starts with these
already loaded. Imports only: running torch ops here could start thread pools, which do not
survive a fork.

torch._dynamo is here because constructing any torch.optim optimizer imports it (about 1.5 s on
a 2-core machine), and scipy.special because the confidence interval of the first window needs
it: without them, every case would pay that inside its own process.
"""

import scipy.special  # noqa: F401
import torch
import torch._dynamo
import torch.profiler
import torch.utils.flop_counter  # noqa: F401
import torchvision  # noqa: F401

import bench.session
import bench.worker  # noqa: F401
