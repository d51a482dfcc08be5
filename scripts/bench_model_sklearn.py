#!/usr/bin/env python3
"""The scikit-learn baseline of `tenantry bench model`.

Trains the natural text-classification baseline a data team reaches for today (hashed word
1-2 grams and character 3-grams within word boundaries, L2-normalised, then a logistic-loss
SGDClassifier) on the same training split as the benchmark, evaluates it on the same test
split, scores the same clause file in chunks of 100k rows, and prints one JSON line: the
scikit-learn version, fine-tune seconds (read, vectorise, fit), macro F1 and accuracy on the
test split, score seconds (read, vectorise, predict_proba, build the output, write Parquet)
and rows per second. Progress goes to stderr. Installs pandas, pyarrow, scikit-learn and
numpy with pip when they are missing.

usage: bench_model_sklearn.py TRAIN.parquet TEST.parquet SCORE.parquet OUT_DIR
"""
import json
import os
import subprocess
import sys
import time

CHUNK_ROWS = 100_000


def log(message):
    print(f"bench_model_sklearn: {message}", file=sys.stderr, flush=True)


def ensure_packages():
    wanted = {"pandas": "pandas", "pyarrow": "pyarrow", "sklearn": "scikit-learn", "numpy": "numpy"}
    missing = []
    for module, package in wanted.items():
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    if missing:
        log(f"installing {' '.join(missing)}")
        cmd = [sys.executable, "-m", "pip", "install", "-q", *missing]
        if subprocess.call(cmd, stdout=sys.stderr) != 0:
            subprocess.check_call(cmd + ["--break-system-packages"], stdout=sys.stderr)


def build_model():
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import FeatureUnion, make_pipeline
    from sklearn.preprocessing import Normalizer

    features = FeatureUnion([
        ("word", HashingVectorizer(analyzer="word", ngram_range=(1, 2), n_features=2**17,
                                   alternate_sign=False, norm=None, lowercase=True)),
        ("char", HashingVectorizer(analyzer="char_wb", ngram_range=(3, 3), n_features=2**17,
                                   alternate_sign=False, norm=None, lowercase=True)),
    ])
    classifier = SGDClassifier(loss="log_loss", max_iter=20, tol=1e-4, random_state=7, n_jobs=2)
    return make_pipeline(features, Normalizer(norm="l2"), classifier)


def texts(series):
    return series.fillna("").astype(str)


def run(train_path, test_path, score_path, out_dir):
    import warnings

    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    import sklearn
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, f1_score

    # max_iter=20 is deliberate; the warning would only add noise to stderr.
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    os.makedirs(out_dir, exist_ok=True)

    # Fine-tune: read, vectorise, fit.
    log(f"training on {train_path}")
    started = time.perf_counter()
    train = pd.read_parquet(train_path, columns=["text", "label"])
    model = build_model()
    model.fit(texts(train["text"]), train["label"].astype(str))
    finetune_seconds = time.perf_counter() - started
    train_rows = len(train)
    classes = [str(c) for c in model.classes_]
    log(f"trained on {train_rows} rows, {len(classes)} classes, in {finetune_seconds:.2f}s")
    del train

    # Evaluate on the test split.
    test = pd.read_parquet(test_path, columns=["text", "label"])
    truth = test["label"].astype(str)
    predicted = model.predict(texts(test["text"]))
    macro_f1 = float(f1_score(truth, predicted, average="macro"))
    accuracy = float(accuracy_score(truth, predicted))
    test_rows = len(test)
    log(f"test: {test_rows} rows, macro F1 {macro_f1:.4f}, accuracy {accuracy:.4f}")
    del test

    # Score: read, vectorise, predict_proba, build the output, write, chunk by chunk.
    out_path = os.path.join(out_dir, "sklearn_scores.parquet")
    log(f"scoring {score_path} -> {out_path}")
    class_names = np.asarray(classes, dtype=object)
    prob_columns = [f"p_{c}" for c in classes]
    started = time.perf_counter()
    source = pq.ParquetFile(score_path)
    writer = None
    score_rows = 0
    try:
        for batch in source.iter_batches(batch_size=CHUNK_ROWS, columns=["clause_id", "text"]):
            chunk = batch.to_pandas()
            proba = model.predict_proba(texts(chunk["text"]))
            best = proba.argmax(axis=1)
            out = {
                "clause_id": chunk["clause_id"].to_numpy(),
                "label": class_names[best],
                "confidence": proba[np.arange(len(best)), best].astype(np.float32),
            }
            for column, values in zip(prob_columns, proba.T):
                out[column] = values.astype(np.float32)
            table = pa.Table.from_pandas(pd.DataFrame(out), preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(out_path, table.schema)
            else:
                table = table.cast(writer.schema)
            writer.write_table(table)
            score_rows += len(chunk)
            log(f"scored {score_rows} rows")
        if writer is None:  # empty score file: still write a file with the right columns
            fields = [pa.field("clause_id", source.schema_arrow.field("clause_id").type),
                      pa.field("label", pa.string()), pa.field("confidence", pa.float32())]
            fields += [pa.field(c, pa.float32()) for c in prob_columns]
            pq.write_table(pa.schema(fields).empty_table(), out_path)
    finally:
        if writer is not None:
            writer.close()
    score_seconds = time.perf_counter() - started
    log(f"scored {score_rows} rows in {score_seconds:.2f}s")

    return {
        "sklearn": sklearn.__version__,
        "finetune_seconds": finetune_seconds,
        "train_rows": train_rows,
        "macro_f1": macro_f1,
        "accuracy": accuracy,
        "test_rows": test_rows,
        "score_seconds": score_seconds,
        "score_rows": score_rows,
        "score_rows_per_second": score_rows / score_seconds if score_seconds > 0 else 0.0,
    }


def main():
    if len(sys.argv) != 5:
        sys.exit("usage: bench_model_sklearn.py TRAIN.parquet TEST.parquet SCORE.parquet OUT_DIR")
    try:
        ensure_packages()
        result = run(*sys.argv[1:5])
    except Exception as error:  # noqa: BLE001 - report any failure as a message and exit 1
        print(f"bench_model_sklearn: error: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
