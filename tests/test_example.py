"""The softmax-regression example trains as well as scikit-learn; the guide's samples run."""

import doctest
import importlib.util
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

import fastsoftmax

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "softmax_regression.py"
DOCS = ROOT / "docs"
# The Dask recipe (plain python blocks, not doctests) is run by tests/test_dask.py.
GUIDE_PAGES = sorted(p for p in DOCS.glob("*.md") if p.name != "dask.md")
ACCURACY_LINE = re.compile(r"test accuracy: (\d\.\d{4})")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The example must run in under a minute; it takes a few seconds.
EXAMPLE_TIMEOUT_S = 60


def load_example():
    """The example as a module, for its constants and helpers."""
    spec = importlib.util.spec_from_file_location("softmax_regression", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_example(*args):
    """Run the example in a fresh interpreter; returns its stdout lines."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT_S,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def parse_accuracy(lines):
    match = ACCURACY_LINE.fullmatch(lines[-1])
    assert match, f"last line is {lines[-1]!r}, not 'test accuracy: X'"
    return float(match.group(1))


def specified_split():
    """The split the issue asks for, built here independently of the example."""
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=0
    )
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


@pytest.fixture(scope="module")
def example_lines():
    return run_example()


def test_example_ends_with_the_test_accuracy(example_lines):
    assert 0.0 <= parse_accuracy(example_lines) <= 1.0
    assert len(example_lines) > 1, "the example prints progress before the result"


def test_example_matches_scikit_learn(example_lines):
    accuracy = parse_accuracy(example_lines)
    X_train, X_test, y_train, y_test = specified_split()
    l2 = load_example().L2_PENALTY
    # sklearn minimizes C * sum(loss) + ||W||^2 / 2, the example mean(loss) + l2/2 ||W||^2.
    with threadpool_limits(limits=1, user_api="blas"):  # tiny problem; see the example
        model = LogisticRegression(C=1.0 / (l2 * len(X_train))).fit(X_train, y_train)
    reference = model.score(X_test, y_test)
    assert accuracy >= 0.95
    assert accuracy >= reference - 0.01, (accuracy, reference)


def test_example_uses_the_specified_split():
    example = load_example()
    for ours, specified in zip(example.load_split(), specified_split(), strict=True):
        np.testing.assert_array_equal(ours, specified)
    X_train, X_test, y_train, y_test = specified_split()
    assert (len(y_train), len(y_test)) == (1347, 450)
    # stratified: every class has its 25% share of test rows, to within one row
    per_class = np.bincount(y_train) + np.bincount(y_test)
    assert np.all(np.abs(np.bincount(y_test) - 0.25 * per_class) <= 1)


def test_example_gradients_match_finite_differences(monkeypatch):
    example = load_example()
    calls = []
    real_cross_entropy = fastsoftmax.cross_entropy

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_cross_entropy(*args, **kwargs)

    # the logits' gradient must come from fastsoftmax's fused kernel
    monkeypatch.setattr(example.fastsoftmax, "cross_entropy", spy)
    rng = np.random.default_rng(0)
    n_rows, n_features, n_classes, l2 = 30, 4, 3, 0.1
    X = rng.standard_normal((n_rows, n_features))
    y = rng.integers(0, n_classes, size=n_rows)
    W = rng.standard_normal((n_features, n_classes))
    b = rng.standard_normal(n_classes)
    logits = np.empty((n_rows, n_classes))
    dZ = np.empty_like(logits)

    def objective(W, b):
        return example.loss_and_gradients(X, y, W, b, l2, logits, dZ)[0]

    _, grad_W, grad_b = example.loss_and_gradients(X, y, W, b, l2, logits, dZ)
    h = 1e-6
    for params, grad in ((W, grad_W), (b, grad_b)):
        numeric = np.empty_like(params)
        for index in np.ndindex(params.shape):
            saved = params[index]
            params[index] = saved + h
            up = objective(W, b)
            params[index] = saved - h
            down = objective(W, b)
            params[index] = saved
            numeric[index] = (up - down) / (2 * h)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)
    assert calls and all(kwargs.get("return_grad") for kwargs in calls)


def test_example_confusion_matrix_matches_scikit_learn():
    example = load_example()
    rng = np.random.default_rng(1)
    y_true, y_pred = rng.integers(0, 4, size=(2, 200))
    np.testing.assert_array_equal(
        example.confusion_matrix(y_true, y_pred, 4), confusion_matrix(y_true, y_pred)
    )


def test_example_plot_writes_a_png_and_compare_prints_scikit_learn(tmp_path):
    path = tmp_path / "curves.png"
    lines = run_example("--plot", str(path), "--compare")
    parse_accuracy(lines)
    assert path.read_bytes()[: len(PNG_SIGNATURE)] == PNG_SIGNATURE
    assert any(re.fullmatch(r"scikit-learn .* test accuracy: \d\.\d{4}", line) for line in lines)


def doctest_blocks(text):
    """The ```python blocks of a Markdown page that are doctests (start with >>>)."""
    return [b for b in re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M) if b.startswith(">>>")]


@pytest.mark.parametrize(
    "page",
    [p for p in GUIDE_PAGES if doctest_blocks(p.read_text())],
    ids=lambda p: p.name,
)
def test_guide_samples_run(page, host_backend, monkeypatch):
    """A page's samples run top to bottom in one namespace, as a reader would run them.

    They run once per CPU backend (standing in for ``auto``), since the guide
    promises the same results whichever backend serves a call.
    """
    monkeypatch.setenv("FASTSOFTMAX_BACKEND", host_backend)
    text = page.read_text()
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    namespace = {}
    report = []
    for index, block in enumerate(doctest_blocks(text)):
        line = text[: text.index(block)].count("\n") + 1
        test = parser.get_doctest(block, namespace, f"{page.name}[{index}]", str(page), line)
        runner.run(test, out=report.append, clear_globs=False)
        namespace = test.globs  # get_doctest copies the namespace; carry it on
    assert runner.failures == 0, "".join(report)


# What the issue asks the guide to cover, as (page, heading) pairs.
REQUIRED_SECTIONS = [
    ("concepts.md", "Logits"),
    ("concepts.md", "Softmax versus argmax"),
    ("concepts.md", "Temperature"),
    ("concepts.md", "Why log_softmax is the stable form"),
    ("concepts.md", "Cross-entropy and its gradient"),
    ("concepts.md", "Two classes: softmax is the sigmoid"),
    ("numerics.md", "The numerics table"),
    ("backends.md", "Choosing a backend"),
    ("performance.md", "The table"),
    ("performance.md", "Reproducing the numbers"),
    ("embedding.md", "No work at import time"),
    ("embedding.md", "Threads and the GIL"),
    ("embedding.md", "Zero allocation with `out=`"),
    ("embedding.md", "Larger than one machine: Dask"),
]


def headings(text):
    return re.findall(r"^#+ (.+)$", text, flags=re.M)


def slug(heading):
    """The anchor GitHub gives a Markdown heading."""
    kept = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return kept.replace(" ", "-")


def test_guide_covers_every_topic_of_the_issue():
    missing = [
        (page, heading)
        for page, heading in REQUIRED_SECTIONS
        if heading not in headings((DOCS / page).read_text())
    ]
    assert not missing


def test_guide_links_resolve():
    broken = []
    for page in GUIDE_PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and linked.suffix == ".md":
                if anchor not in {slug(h) for h in headings(linked.read_text())}:
                    broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken


def test_index_links_every_page():
    index = (DOCS / "index.md").read_text()
    for page in sorted(DOCS.glob("*.md")):
        if page.name != "index.md":
            assert f"]({page.name})" in index, page.name


def test_numerics_table_is_the_readme_table():
    def table(text):
        return re.search(r"^\| input row \|.*?\n\n", text, flags=re.S | re.M).group(0)

    readme = (ROOT / "README.md").read_text()
    assert table((DOCS / "numerics.md").read_text()) == table(readme)


def test_performance_page_has_the_table_section_for_gb_table():
    text = (DOCS / "performance.md").read_text()
    assert text.count("<!-- performance-table -->") == 1
    assert text.count("<!-- /performance-table -->") == 1
    section = text.split("<!-- performance-table -->")[1].split("<!-- /performance-table -->")[0]
    assert "python benchmarks/gb_table.py" in section
    assert (ROOT / "benchmarks" / "gb_table.py").exists()


def test_guide_states_the_current_tuning_constants():
    from fastsoftmax import _dispatch, _layout

    backends = (DOCS / "backends.md").read_text()
    assert f"{_dispatch.AUTO_PARALLEL_MIN_ELEMENTS:,} elements" in backends
    embedding = (DOCS / "embedding.md").read_text()
    assert f"1/{round(1 / _layout.STAGING_FRACTION)} of the input" in embedding
    assert f"at most {_layout.STAGING_MAX_BYTES // 2**20} MiB" in embedding


def test_import_sample_prints_what_the_guide_says():
    """No Numba at import time: the guide's shell sample, run as written."""
    text = (DOCS / "embedding.md").read_text()
    command, expected = re.search(r'^python -c "(.*)"\s+# (\w+)$', text, flags=re.M).groups()
    result = subprocess.run(
        [sys.executable, "-c", command], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == expected
