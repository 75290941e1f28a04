"""The backward pass of softmax: ``y * (grad - sum(grad * y))`` per row."""

from .implementations import TimeOperation


class SoftmaxBackward(TimeOperation):
    op = "softmax_backward"

    def time_softmax_backward(self, shape, dtype, impl, output):
        self.call()
