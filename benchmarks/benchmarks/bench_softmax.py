"""Forward passes: softmax, log_softmax and logsumexp."""

from .implementations import TimeOperation


class Softmax(TimeOperation):
    op = "softmax"

    def time_softmax(self, shape, dtype, impl, output):
        self.call()


class LogSoftmax(TimeOperation):
    op = "log_softmax"

    def time_log_softmax(self, shape, dtype, impl, output):
        self.call()


class LogSumExp(TimeOperation):
    op = "logsumexp"

    def time_logsumexp(self, shape, dtype, impl, output):
        self.call()
