"""Linear baselines fitted on the same splits as a fine-tuned model: logistic regression
(classification, one per label for multilabel tasks) or ridge regression (one per target) on
k-mer counts, one-hot codes (DNA, protein) or Morgan fingerprints (SMILES), features scaled to unit
variance on the training split. The regularisation strength is chosen on the validation split by
the same metric that picks the model's epoch (scikit-learn)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from bioxlstm.alphabets import Alphabet
from bioxlstm.baselines.features import DEFAULT_K, kmer_counts, morgan_fingerprints, one_hot
from bioxlstm.data.labelled import LabelledData
from bioxlstm.errors import ConfigError
from bioxlstm.extras import MissingExtraError, require
from bioxlstm.metrics import LOWER_IS_BETTER, task_metrics
from bioxlstm.vocabulary import Vocabulary

BASELINES = ("auto", "kmer", "onehot", "fingerprint", "none")
LOGISTIC_C = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
RIDGE_ALPHA = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)


@dataclass(frozen=True)
class BaselineSpec:
    """Which features: kind (kmer, onehot, fingerprint) and the k-mer length."""

    kind: str
    k: int | None = None

    def name(self, task: str) -> str:
        """e.g. '4-mer logistic regression', 'Morgan fingerprint ridge regression'."""
        features = {"kmer": f"{self.k}-mer", "onehot": "one-hot", "fingerprint": "Morgan fingerprint"}
        return f"{features[self.kind]} {'ridge' if task == 'regression' else 'logistic'} regression"


def resolve_baseline(kind: str, vocabulary: Vocabulary, k: int | None = None) -> BaselineSpec | None:
    """The baseline to run with a model of `vocabulary` (None for 'none'); 'auto' is the
    alphabet's natural one: k-mer counts for DNA and proteins, fingerprints for SMILES. Refuses
    features the vocabulary lacks and --kmer without k-mers, naming the option."""
    if kind not in BASELINES:
        raise ConfigError(f"--baseline must be one of {', '.join(BASELINES)}, got {kind!r}")
    sequences = isinstance(vocabulary, Alphabet)
    if kind == "auto":
        kind = "kmer" if sequences else "fingerprint"
    if k is not None and kind != "kmer":
        raise ConfigError(f"--kmer applies to the k-mer baseline, not --baseline {kind}")
    if kind == "none":
        return None
    if kind in ("kmer", "onehot") and not sequences:
        raise ConfigError(f"--baseline {kind} needs a DNA or protein model; a SMILES model takes "
                          f"--baseline fingerprint")
    if kind == "fingerprint" and sequences:
        raise ConfigError(f"--baseline fingerprint needs a SMILES model; a {vocabulary.name} model "
                          f"takes --baseline kmer or onehot")
    if kind == "kmer":
        k = k or DEFAULT_K[vocabulary.name]
    return BaselineSpec(kind, k)


def check_available(spec: BaselineSpec) -> None:
    """Fail before any training when the baseline's packages are missing (one line naming the
    extra, and --baseline none as the way around)."""
    needs = [("sklearn.linear_model", "downstream"), ("scipy.sparse", "downstream")]
    if spec.kind == "fingerprint":
        needs.append(("rdkit.Chem", "chem"))
    for module, extra in needs:
        try:
            require(module, extra, f"the --baseline {spec.kind} model")
        except MissingExtraError as err:
            raise MissingExtraError(f"{err} (or --baseline none)") from None


@dataclass
class BaselineFit:
    """Test predictions (the model's form), the chosen regularisation and its validation score."""

    name: str
    predictions: np.ndarray
    setting: float
    valid_score: float


def features(spec: BaselineSpec, parts: list[LabelledData], vocabulary: Vocabulary) -> list:
    """The feature matrix of each data set, built together so all share one width."""
    tokens = [t for data in parts for t in data.tokens]
    if spec.kind == "kmer":
        matrix = kmer_counts(tokens, vocabulary, spec.k)
    elif spec.kind == "onehot":
        matrix = one_hot(tokens, vocabulary)
    else:
        matrix = morgan_fingerprints([t for data in parts for t in data.texts])
    bounds = np.cumsum([0, *(len(d) for d in parts)])
    return [matrix[bounds[j]:bounds[j + 1]] for j in range(len(parts))]


def fit_baseline(spec: BaselineSpec, train: LabelledData, valid: LabelledData, test: LabelledData,
                 vocabulary: Vocabulary, select: str, seed: int = 0) -> BaselineFit:
    """Fit on train for each regularisation strength, keep the one best on valid by `select`,
    and predict test."""
    preprocessing = require("sklearn.preprocessing", "downstream", f"the --baseline {spec.kind} model")
    x_train, x_valid, x_test = features(spec, [train, valid, test], vocabulary)
    scaler = preprocessing.StandardScaler(with_mean=False).fit(x_train)
    x_train, x_valid, x_test = (scaler.transform(x) for x in (x_train, x_valid, x_test))
    grid = RIDGE_ALPHA if train.task == "regression" else LOGISTIC_C
    sign = -1.0 if select in LOWER_IS_BETTER else 1.0
    best = None
    for setting in grid:
        models = _fit(train, x_train, setting, seed)
        score = task_metrics(train.task, valid.labels, _predict(models, x_valid, train),
                             train.classes)[select]
        key = -math.inf if math.isnan(score) else sign * score
        if best is None or key > best[0]:
            best = (key, setting, score, models)
    _, setting, score, models = best
    return BaselineFit(spec.name(train.task), _predict(models, x_test, train), setting, score)


def _fit(data: LabelledData, x, setting: float, seed: int) -> list:
    """One fitted sklearn model per output column (one in all for classification); a column with
    a single known value becomes that constant."""
    linear = require("sklearn.linear_model", "downstream", "the linear baselines")
    exceptions = require("sklearn.exceptions", "downstream", "the linear baselines")
    labels = data.labels if data.labels.ndim == 2 else data.labels[:, None]
    models = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", exceptions.ConvergenceWarning)
        for j in range(labels.shape[1]):
            known = data.known()[:, j]
            y = labels[known, j]
            if data.task != "regression" and len(np.unique(y)) < 2:
                models.append(float(y[0]) if len(y) else 0.0)
                continue
            model = (linear.Ridge(alpha=setting, random_state=seed) if data.task == "regression"
                     else linear.LogisticRegression(C=setting, max_iter=2000, random_state=seed))
            models.append(model.fit(x[known], y.astype(np.float64 if data.task == "regression"
                                                       else np.int64)))
    return models


def _predict(models: list, x, data: LabelledData) -> np.ndarray:
    """Predictions in the model's form: class probabilities (N, K), label probabilities or values
    (N, T)."""
    if data.task == "classification":
        model, probs = models[0], np.zeros((x.shape[0], len(data.classes)))
        if isinstance(model, float):
            probs[:, int(model)] = 1.0
        else:
            probs[:, model.classes_] = model.predict_proba(x)
        return probs
    columns = []
    for model in models:
        if isinstance(model, float):
            columns.append(np.full(x.shape[0], model))
        elif data.task == "multilabel":
            columns.append(model.predict_proba(x)[:, list(model.classes_).index(1)])
        else:
            columns.append(model.predict(x))
    return np.stack(columns, axis=1)
