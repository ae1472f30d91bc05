"""Placing the network on devices and processes, applied from outside the model.

`exchange`: how the columns' activations move (between devices, or between
processes in mirrored autograd pairs); `parallel`: the process groups and data
parallelism over replicas; `placement`: the builders of the three placements;
`launch`: torchrun's environment, the backend decision and where a rank sits;
`compat`: the one place that bridges torch versions (reduce-scatter's name).
"""
