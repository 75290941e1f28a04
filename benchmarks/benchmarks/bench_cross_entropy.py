"""Cross-entropy loss and its gradient with respect to the logits, together.

fastsoftmax computes both in one fused pass; ``numpy-naive`` goes through
log_softmax; ``torch`` runs ``cross_entropy`` forward and autograd backward. With
``output="out"`` the gradient goes into a preallocated array.
"""

from .implementations import TimeOperation


class CrossEntropy(TimeOperation):
    op = "cross_entropy"

    def time_cross_entropy_grad(self, shape, dtype, impl, output):
        self.call()
