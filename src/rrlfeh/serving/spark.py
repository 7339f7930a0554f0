"""Scoring on Apache Spark: the champion pyfunc through `mlflow.pyfunc.spark_udf`, one row a star.

`rrlfeh score --engine spark` (data/raw) and `python -m rrlfeh.serving.spark` / `spark-submit`
(a user's epoch file, long form or a Gaia layout, as `rrlfeh predict` takes) run the same job:

1. Spark reads the epochs and packs each star into ONE row: `source_id` and, per input column,
   an array of the star's values in input order (the row order of the file, kept through a row
   index), plus the per-star columns (period, epoch_max, type) where data/raw has them.
2. `mlflow.pyfunc.spark_udf` runs `PackedStars`, a small pyfunc saved for the run with the
   champion model copied inside it, over Arrow batches of packed rows. It unpacks a batch into
   the long form (one row an epoch) and calls the champion's own `predict` on it: the same
   pipeline (`rrlfeh.serving.pipeline`, the one place that builds the network input) as the
   in-process `score` stage, `rrlfeh predict` and the server, so the numbers are the same.

Why the packing: spark_udf is a scalar (iterator) pandas UDF. It must return one value per input
row, and Spark cuts a partition into Arrow batches of `maxRecordsPerBatch` rows wherever the cut
falls. The champion takes one row an epoch and answers one row a star, so on epoch rows it can
neither return the right length nor be sure to see all of a star's epochs. On packed rows both
hold: a row is a whole star, the answer is one row for it. (The alternative, applyInPandas
grouped by star with the model loaded per worker, is correct too but would not go through
spark_udf's model distribution: here the model folder travels to the executors with the job, so
only the driver needs the registry.)
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from rrlfeh.logs import configure_logging
from rrlfeh.serving.model_uri import resolve
from rrlfeh.serving.pipeline import OUTPUT_COLUMNS, conform_output

log = logging.getLogger(__name__)

ROW, FIRST, PACKED = "_row", "_first", "_epochs"
STAR_COLUMNS = ("period", "epoch_max", "type")
RAW_EPOCH_COLUMNS = ("time", "mag", "flux", "flux_error", "rejected")
_SPARK_TYPES = {"int64": "long", "float64": "double", "bool": "boolean", "string": "string"}
_PANDAS3 = "PySpark does not yet fully support pandas >= 3.0.0"


class SparkUnavailable(ValueError):
    """pyspark (the optional [spark] extra) is not installed."""


def require_pyspark() -> None:
    """Import pyspark or fail with one line saying how to get it."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise SparkUnavailable("--engine spark needs pyspark, the optional [spark] extra: run "
                               "`make setup-spark` (needs Java 17+), or use --engine local"
                               ) from None


@dataclass(frozen=True)
class SparkSettings:
    """params.yaml `score.spark`: where Spark runs and how the stars are cut into work."""

    master: str                  # local[2], spark://host:7077, yarn, k8s://...
    partitions: int              # tasks over the packed stars; 0: Spark's default parallelism
    stars_per_batch: int         # packed stars per Arrow batch = per call of the model
    log_level: str               # Spark's own (log4j) level: WARN, ERROR
    conf: Mapping[str, str] = field(default_factory=dict)   # any other spark.* setting

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> SparkSettings:
        """The `score.spark` mapping (ConfigError naming a missing key)."""
        from rrlfeh.config import ConfigError

        missing = [k for k in ("master", "partitions", "stars_per_batch", "log_level")
                   if k not in p]
        if missing:
            raise ConfigError(f"params.yaml: score.spark lacks {', '.join(missing)}")
        return cls(master=str(p["master"]), partitions=int(p["partitions"]),
                   stars_per_batch=max(1, int(p["stars_per_batch"])),
                   log_level=str(p["log_level"]).upper(),
                   conf={str(k): str(v) for k, v in dict(p.get("conf") or {}).items()})


def session(settings: SparkSettings, work: Path, *, submitted: bool = False):
    """A SparkSession: the master of `settings` (or spark-submit's when `submitted`), no UI,
    log4j at `log_level` from the JVM's start, and for a local master the workers on this
    interpreter (else they start the system python, which lacks pyarrow and rrlfeh)."""
    require_pyspark()
    warnings.filterwarnings("ignore", message=re.escape(_PANDAS3), category=FutureWarning)
    # pyspark 4.3's Arrow conversion calls astype(copy=False), deprecated by pandas 3
    warnings.filterwarnings("ignore", message="The copy keyword is deprecated",
                            module=r"pyspark\.")
    from pyspark.sql import SparkSession

    log4j = work / "log4j2.properties"
    # WARN at the JVM's start (any other level makes Spark print that it resets it to WARN),
    # Hadoop's note on its native library off; then `log_level` (setLogLevel below)
    log4j.write_text("rootLogger.level = warn\nlogger.native.level = error\n"
                     "logger.native.name = org.apache.hadoop.util.NativeCodeLoader\n"
                     "rootLogger.appenderRef.stderr.ref = console\n"
                     "appender.console.type = Console\nappender.console.name = console\n"
                     "appender.console.target = SYSTEM_ERR\n"
                     "appender.console.layout.type = PatternLayout\n"
                     "appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n%ex\n")
    builder = SparkSession.builder.appName("rrlfeh-score")
    local = not submitted and settings.master.startswith("local")
    if not submitted:
        builder = builder.master(settings.master)
    if local:  # this machine only: bound to the loopback, workers on this interpreter
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        os.environ["PYSPARK_PYTHON"] = sys.executable
        builder = builder.config("spark.pyspark.python", sys.executable)
    # the Python workers would print pyspark's pandas-3 note too (the numbers are checked by
    # tests/serving/test_spark_scoring.py); local workers inherit this process's environment
    quiet = f"ignore:{_PANDAS3}:FutureWarning"
    os.environ.setdefault("PYTHONWARNINGS", quiet)
    conf = {"spark.ui.enabled": "false",
            "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={log4j.as_uri()}",
            "spark.executorEnv.PYTHONWARNINGS": quiet,
            "spark.executorEnv.TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
            "spark.sql.execution.arrow.pyspark.enabled": "true",
            "spark.sql.execution.arrow.maxRecordsPerBatch": str(settings.stars_per_batch),
            # the packed stars stay in `partitions` tasks (AQE would merge them into fewer)
            "spark.sql.adaptive.coalescePartitions.enabled": "false", **settings.conf}
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(settings.log_level)
    n = settings.partitions or spark.sparkContext.defaultParallelism
    spark.conf.set("spark.sql.shuffle.partitions", str(n))
    return spark


# MLflow 3 asks for type hints on predict when a PythonModel is defined (see serving.pyfunc)
with warnings.catch_warnings():
    warnings.showwarning = lambda *args, **kwargs: None

    class PackedStars(mlflow.pyfunc.PythonModel):
        """One packed row a star in (array columns of its epochs), the champion's one row a
        star out, in the same order; the champion model is this model's artifact."""

        def load_context(self, context) -> None:
            self.champion = mlflow.pyfunc.load_model(context.artifacts["champion"])

        def predict(self, context, model_input, params=None):
            """The champion's predict on the unpacked long form (its read_request, pipeline)."""
            from rrlfeh.serving.inputs import read_epoch_frame
            from rrlfeh.serving.pyfunc import predict_frame

            out = predict_frame(self.champion, read_epoch_frame(unpack(model_input)))
            ids = pd.to_numeric(model_input["source_id"]).to_numpy(np.int64)
            if len(out) != len(ids) or not np.array_equal(out["source_id"].to_numpy(), ids):
                raise RuntimeError("spark scoring: the model's stars are not the packed stars")
            # spark_udf casts string fields with np.str_, which makes None 'None': a star
            # without a type travels as '' and is made null again (`_typed`)
            return out.assign(type=out["type"].astype(object).where(out["type"].notna(), ""))


def unpack(packed: pd.DataFrame) -> pd.DataFrame:
    """The long form of packed rows: array columns concatenated, scalar columns repeated per
    epoch (the star's rows in their input order, stars in row order)."""
    arrays = [c for c in packed.columns
              if c != "source_id" and any(isinstance(v, np.ndarray | list) for v in packed[c])]
    n = np.array([len(v) for v in packed[arrays[0]]]) if arrays else np.ones(len(packed), int)
    out = {}
    for c in packed.columns:
        if c in arrays:
            parts = [np.asarray(v) for v in packed[c]]
            out[c] = np.concatenate(parts) if parts else np.array([])
        else:
            out[c] = np.repeat(packed[c].to_numpy(), n)
    return pd.DataFrame(out)


def pack(epochs, per_star=None):
    """One row a star (Spark): `source_id`, FIRST (the star's first row, for output order) and,
    for every other column of `epochs`, the array of its values in row order; the scalar
    columns of `per_star` (one row a star) joined on."""
    from pyspark.sql import functions as F

    cols = [c for c in epochs.columns if c != "source_id"]
    rows = epochs.withColumn(ROW, F.monotonically_increasing_id())
    packed = rows.groupBy("source_id").agg(
        F.sort_array(F.collect_list(F.struct(ROW, *cols))).alias(PACKED),
        F.min(ROW).alias(FIRST))
    packed = packed.select("source_id", FIRST,
                           *[F.transform(PACKED, _field(c)).alias(c) for c in cols])
    if per_star is not None:
        packed = packed.join(per_star, on="source_id", how="left")
    return packed


def _field(name: str):
    """`x -> x.name` for F.transform (a closure: Spark counts a lambda's parameters)."""
    return lambda x: x[name]


def score_packed(spark, packed, model_uri: str, work: Path):
    """The scored stars (OUTPUT_COLUMNS and FIRST) of packed rows through spark_udf."""
    from pyspark.sql import functions as F

    adapter = save_adapter(model_uri, work / "packed_stars")
    fields = ", ".join(f"{c} {_SPARK_TYPES[d]}" for c, d in OUTPUT_COLUMNS.items())
    with _quiet_spark_udf():
        udf = mlflow.pyfunc.spark_udf(spark, str(adapter), result_type=fields,
                                      env_manager="local")
    inputs = [c for c in packed.columns if c != FIRST]
    scored = packed.select(FIRST, udf(F.struct(*inputs)).alias("r")).select(FIRST, "r.*")
    return scored.withColumn("type", F.when(F.col("type") != "", F.col("type")))


def save_adapter(model_uri: str, dest: Path) -> Path:
    """PackedStars saved at `dest`, the model of `model_uri` downloaded into it (its artifact
    `champion`) with that model's own requirements."""
    from mlflow.artifacts import download_artifacts

    champion = Path(download_artifacts(artifact_uri=model_uri, dst_path=str(dest.parent /
                                                                             "champion")))
    reqs = champion / "requirements.txt"
    with _quiet_spark_udf():  # PackedStars is pickled by reference to this module
        mlflow.pyfunc.save_model(str(dest), python_model=PackedStars(),
                                 artifacts={"champion": str(champion)},
                                 pip_requirements=str(reqs) if reqs.exists() else None)
    return dest


class _quiet_spark_udf:
    """Drop MLflow's two fixed notes: spark_udf's that env_manager='local' does not rebuild the
    training environment (the executors run this project's environment by design), and
    save_model's on CloudPickle (PackedStars is this module's class); other warnings stay."""

    @staticmethod
    def filter(record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return "env_manager=\"local\"" not in text and "serialized using CloudPickle" not in text

    def __enter__(self) -> None:
        logging.getLogger("mlflow.pyfunc").addFilter(self.filter)

    def __exit__(self, *exc) -> None:
        logging.getLogger("mlflow.pyfunc").removeFilter(self.filter)


def _collect(scored, what: str) -> pd.DataFrame:
    """The scored stars on the driver, one row each, in input order (errors in one line).
    Sorted here, not by Spark: orderBy's sampling pass would run the model a second time."""
    try:
        out = scored.toPandas()
    except Exception as exc:  # a worker's error arrives wrapped in Spark's stack traces
        raise ValueError(f"{what}: {_worker_error(exc)}") from None
    return conform_output(out.sort_values(FIRST, kind="stable").drop(columns=FIRST))


def _worker_error(exc: Exception) -> str:
    """The last line a Python worker raised (the rrlfeh / MLflow message), not Spark's trace."""
    text = str(exc)
    hits = re.findall(r"^\s*[\w.]*(?:Error|Exception|Rejected): (.+)$", text, flags=re.M)
    return (hits[-1] if hits else text.strip().splitlines()[0])[:300]


def check_request(sample: pd.DataFrame, what: str) -> None:
    """A malformed input (a missing or non-numeric column) stops on the driver in one line,
    before any job: `read_request` on the first rows, as the champion would read them."""
    from rrlfeh.serving.inputs import RequestError, read_epoch_frame, read_request

    try:
        read_request(read_epoch_frame(sample))
    except RequestError as exc:
        raise ValueError(f"{what}: {exc}") from None


def score_raw(raw_dir: Path, model_uri: str, settings: SparkSettings) -> pd.DataFrame:
    """Every star with epochs in data/raw (epochs.parquet with stars.parquet's period,
    epoch_max, type), scored on Spark: the rows the in-process stage writes, star order."""
    with tempfile.TemporaryDirectory(prefix="rrlfeh-spark-") as tmp:
        spark = session(settings, Path(tmp))
        try:
            epochs = spark.read.parquet(str(raw_dir / "epochs.parquet")) \
                .select("source_id", *RAW_EPOCH_COLUMNS)
            stars = spark.read.parquet(str(raw_dir / "stars.parquet")) \
                .select("source_id", *STAR_COLUMNS)
            scored = score_packed(spark, pack(epochs, stars), model_uri, Path(tmp))
            return _collect(scored, str(raw_dir / "epochs.parquet"))
        finally:
            spark.stop()


def read_epochs(spark, path: str):
    """A user's epoch file as a Spark frame (parquet; column names in lower case, a stored
    pandas index left out); ValueError naming the file without a source_id column."""
    from pyspark.sql import functions as F

    frame = spark.read.parquet(path)
    frame = frame.select([F.col(f"`{c}`").alias(c.strip().lower()) for c in frame.columns
                          if not re.fullmatch(r"__index_level_\d+__", c)])  # pandas' index
    if "source_id" not in frame.columns:
        raise ValueError(f"{path}: no source_id column (columns {sorted(frame.columns)})")
    return frame


def score_file(input_path: str, output: str, model_uri: str, settings: SparkSettings, *,
               submitted: bool = False) -> int:
    """Score a user's epoch parquet (file or folder, local or shared storage) on Spark; write
    one row a star, input order, as parquet at `output` (a folder, written by the executors).
    Returns the number of stars."""
    with tempfile.TemporaryDirectory(prefix="rrlfeh-spark-") as tmp:
        spark = session(settings, Path(tmp), submitted=submitted)
        try:
            epochs = read_epochs(spark, input_path)
            check_request(epochs.limit(1000).toPandas(), input_path)
            # kept once computed: orderBy samples its input first, which would score it twice
            scored = score_packed(spark, pack(epochs), model_uri, Path(tmp)).persist()
            try:
                scored.orderBy(FIRST).drop(FIRST).write.mode("overwrite").parquet(output)
            except Exception as exc:
                raise ValueError(f"{input_path}: {_worker_error(exc)}") from None
            return spark.read.parquet(output).count()
        finally:
            spark.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m rrlfeh.serving.spark INPUT -o OUTPUT` (or the file given to spark-submit)."""
    from rrlfeh import config
    from rrlfeh.training.tracking import TrackingSettings

    ap = argparse.ArgumentParser(prog="rrlfeh.serving.spark", description=__doc__.split("\n")[0])
    ap.add_argument("input", help="epoch photometry parquet: long form (source_id, time, mag, "
                                  "...) or a Gaia layout; a file or a folder, any Hadoop path")
    ap.add_argument("-o", "--output", required=True, help="result parquet folder")
    ap.add_argument("--model", default=None, help="model URI (default score.model_uri)")
    ap.add_argument("--params", default="params.yaml", help="params file (score.spark, tracking)")
    ap.add_argument("--master", default=None, help="Spark master (default: spark-submit's, "
                                                   "else score.spark.master)")
    args = ap.parse_args(argv)
    configure_logging()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    try:
        params = config.load_params(args.params)
        root = Path(args.params).resolve().parent
        score_p = config.section(params, "score")
        settings = SparkSettings.from_params(score_p["spark"])
        submitted = "PYSPARK_GATEWAY_PORT" in os.environ and args.master is None
        if args.master:
            settings = SparkSettings(**{**settings.__dict__, "master": args.master})
        mlflow.set_tracking_uri(TrackingSettings.from_params(config.section(params, "tracking"),
                                                             root).uri)
        model = resolve(args.model or str(score_p["model_uri"]))
        uri, version = model.pinned, model.version
        n = score_file(args.input, args.output, uri, settings, submitted=submitted)
    except (config.ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"rrlfeh.serving.spark: error: {exc}", file=sys.stderr)
        return 1
    log.info("spark: %d stars of %s scored by %s (version %s) -> %s", n, args.input, uri,
             version, args.output)
    return 0


if __name__ == "__main__":  # the file given to spark-submit: run the package's module, whose
    from rrlfeh.serving.spark import main as package_main  # PackedStars executors can import

    sys.exit(package_main())
