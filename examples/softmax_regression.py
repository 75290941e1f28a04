"""Softmax regression on scikit-learn's digits, trained with fastsoftmax.cross_entropy.

A multinomial logistic (softmax) regression: logits ``Z = X @ W + b``, loss the
mean cross-entropy of ``softmax(Z)`` against the labels plus ``l2 / 2 * ||W||**2``.
One call, ``fastsoftmax.cross_entropy(Z, y, return_grad=True)``, gives the mean
loss and its gradient with respect to the logits, ``dZ = (softmax(Z) - onehot(y)) / n``
(the ``dZ = yhat - y`` step of backpropagation, divided by ``n`` because the loss
is a mean); the rest is plain NumPy: ``dW = X.T @ dZ + l2 * W`` and
``db = dZ.sum(axis=0)``.

The data are the 8x8 digit images bundled with scikit-learn (no download),
split 75/25 stratified by class with ``random_state=0`` and standardized with the
training rows' mean and standard deviation.

The optimizer is full-batch gradient descent with Nesterov momentum. The
objective is ``l2``-strongly convex and ``L``-smooth, and both constants are known
(``L`` from the largest singular value of the data), so the step is ``1 / L`` and
the momentum ``(sqrt(kappa) - 1) / (sqrt(kappa) + 1)`` with ``kappa = L / l2``.
Here ``kappa`` is in the thousands: plain gradient descent shrinks the error by
about ``1 - 1/kappa`` a step and needs thousands of steps, Nesterov's method by
about ``1 - 1/sqrt(kappa)`` and converges in a few hundred. The momentum is
dropped whenever it carries a step uphill (gradient restart, O'Donoghue and
Candes 2015), which keeps the loss curve monotone. Full batches keep the run
deterministic: the weights start at zero (the problem is convex, so no random
start is needed) and the only randomness is the split's fixed seed.

Usage::

    python examples/softmax_regression.py [--plot FILE.png] [--compare]

``--plot`` draws the training loss curve and the test confusion matrix;
``--compare`` also fits scikit-learn's ``LogisticRegression`` with the matching
penalty and prints its test accuracy. The last line printed is always
``test accuracy: X``.
"""

import argparse
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

import fastsoftmax

SPLIT_SEED = 0
TEST_FRACTION = 0.25
L2_PENALTY = 1e-3  # l2 in l2 / 2 * ||W||**2; the bias is not penalized
N_STEPS = 500
REPORT_EVERY = 100


def load_split():
    """The digits split 75/25 by class with a fixed seed, standardized on the training rows.

    Returns ``X_train, X_test, y_train, y_test`` as float64 features and int64 labels.
    """
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=TEST_FRACTION, stratify=y, random_state=SPLIT_SEED
    )
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


def loss_and_gradients(X, y, W, b, l2, logits, dZ):
    """Objective at ``(W, b)`` and its gradients; `logits` and `dZ` are reused buffers."""
    np.matmul(X, W, out=logits)
    logits += b
    data_loss, _ = fastsoftmax.cross_entropy(logits, y, return_grad=True, grad_out=dZ)
    loss = float(data_loss) + 0.5 * l2 * float(np.sum(W * W))
    grad_W = X.T @ dZ + l2 * W
    grad_b = dZ.sum(axis=0)
    return loss, grad_W, grad_b


def smoothness(X, l2):
    """An upper bound ``L`` on the curvature of the objective.

    The Hessian of softmax cross-entropy with respect to one row of logits is
    ``diag(p) - p p^T``, whose eigenvalues are at most 1/2; through the linear
    model (features plus a column of ones for the bias) and the mean over ``n``
    rows that gives ``sigma_max([X, 1])**2 / (2 n)``, plus ``l2`` for the penalty.
    """
    with_bias = np.hstack([X, np.ones((X.shape[0], 1))])
    return 0.5 * np.linalg.norm(with_bias, 2) ** 2 / X.shape[0] + l2


def predict(W, b, X):
    """Class of the largest logit per row (softmax preserves the order, so it is not needed)."""
    return np.argmax(X @ W + b, axis=1)


def train(X, y, n_classes, l2=L2_PENALTY, n_steps=N_STEPS, report=print):
    """Fit ``W, b`` by Nesterov's accelerated gradient.

    Returns ``W``, ``b`` and the objective at the point each gradient was taken.
    """
    n_rows, n_features = X.shape
    lipschitz = smoothness(X, l2)
    step = 1.0 / lipschitz
    root_kappa = np.sqrt(lipschitz / l2)
    momentum = (root_kappa - 1.0) / (root_kappa + 1.0)

    W = np.zeros((n_features, n_classes))
    b = np.zeros(n_classes)
    W_prev, b_prev = W.copy(), b.copy()
    logits = np.empty((n_rows, n_classes))
    dZ = np.empty_like(logits)
    losses = np.empty(n_steps)
    for i in range(n_steps):
        # Nesterov: take the gradient at a point looked ahead along the last move.
        W_ahead = W + momentum * (W - W_prev)
        b_ahead = b + momentum * (b - b_prev)
        losses[i], grad_W, grad_b = loss_and_gradients(X, y, W_ahead, b_ahead, l2, logits, dZ)
        W_next = W_ahead - step * grad_W
        b_next = b_ahead - step * grad_b
        uphill = np.vdot(grad_W, W_next - W) + np.vdot(grad_b, b_next - b) > 0
        # On a restart the next look-ahead has no momentum: previous = current.
        W_prev, b_prev = (W_next, b_next) if uphill else (W, b)
        W, b = W_next, b_next
        if (i + 1) % REPORT_EVERY == 0 or i == 0:
            train_accuracy = np.mean(predict(W, b, X) == y)
            report(f"step {i + 1:4d}  loss {losses[i]:.6f}  train accuracy {train_accuracy:.4f}")
    return W, b, losses


def confusion_matrix(y_true, y_pred, n_classes):
    """Counts of (true class, predicted class) pairs, true classes along the rows."""
    pairs = y_true * n_classes + y_pred
    return np.bincount(pairs, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def sklearn_test_accuracy(X_train, X_test, y_train, y_test, l2=L2_PENALTY):
    """Test accuracy of scikit-learn's LogisticRegression with the same penalty.

    scikit-learn minimizes ``C * sum(loss) + ||W||**2 / 2``; dividing by
    ``C * n`` gives this example's ``mean(loss) + l2 / 2 * ||W||**2`` with
    ``C = 1 / (l2 * n)``. Neither penalizes the bias.
    """
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0 / (l2 * len(X_train)))
    model.fit(X_train, y_train)
    return model.score(X_test, y_test)


def plot(path, losses, confusion, accuracy):
    """Save the loss curve and the confusion matrix side by side to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_conf) = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    ax_loss.plot(np.arange(1, len(losses) + 1), losses)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("gradient step")
    ax_loss.set_ylabel("training loss (cross-entropy + L2)")
    ax_loss.set_title("Training loss")
    ax_loss.grid(True, which="both", alpha=0.3)

    n_classes = confusion.shape[0]
    ax_conf.imshow(confusion, cmap="Blues")
    threshold = confusion.max() / 2
    for (true, pred), count in np.ndenumerate(confusion):
        color = "white" if count > threshold else "black"
        ax_conf.text(pred, true, str(count), ha="center", va="center", color=color, fontsize=8)
    ax_conf.set_xticks(range(n_classes))
    ax_conf.set_yticks(range(n_classes))
    ax_conf.set_xlabel("predicted digit")
    ax_conf.set_ylabel("true digit")
    ax_conf.set_title(f"Test confusion matrix (accuracy {accuracy:.4f})")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--plot", metavar="FILE.png", help="save the loss curve and the confusion matrix here"
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also fit scikit-learn's LogisticRegression and print its test accuracy",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    X_train, X_test, y_train, y_test = load_split()
    n_classes = int(y_train.max()) + 1
    print(
        f"digits: {len(X_train)} training and {len(X_test)} test rows, "
        f"{X_train.shape[1]} features, {n_classes} classes"
    )
    start = time.perf_counter()
    # The matrix products here are tiny (1347 x 64 by 64 x 10): BLAS threads only
    # add synchronization, which on a busy machine costs more than the products.
    with threadpool_limits(limits=1, user_api="blas"):
        W, b, losses = train(X_train, y_train, n_classes)
    print(f"trained in {time.perf_counter() - start:.2f} s")

    y_pred = predict(W, b, X_test)
    accuracy = float(np.mean(y_pred == y_test))
    if args.plot:
        plot(args.plot, losses, confusion_matrix(y_test, y_pred, n_classes), accuracy)
        print(f"wrote {args.plot}")
    if args.compare:
        reference = sklearn_test_accuracy(X_train, X_test, y_train, y_test)
        print(f"scikit-learn LogisticRegression test accuracy: {reference:.4f}")
    print(f"test accuracy: {accuracy:.4f}")


if __name__ == "__main__":
    main()
