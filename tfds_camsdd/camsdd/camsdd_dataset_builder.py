"""CamSDD: the Camera Scene Detection Dataset (30 scene classes, 576×384 photos).

Build with ``tfds build camsdd --imports tfds_camsdd --manual_dir M`` (or
``tfds build camsdd`` from inside ``tfds_camsdd/``). Examples are produced by a
Beam pipeline, so ``--beam_pipeline_options`` picks DirectRunner or Dataflow.

Invalid images follow the policy in the environment variable
``CAMSDD_INVALID_IMAGE_POLICY`` (read when the pipeline is built):

* ``report`` (default): an image that decodes but is not a 576×384 RGB JPEG is
  center-cropped to 3:2, resized to 576×384 and re-encoded; an image that does
  not decode is skipped. Each such file is named in a warning and in
  ``build_report.json`` next to the built dataset.
* ``fail``: the first such image stops the build with an error naming it.

Configs: ``official`` (the default) holds the official splits only; ``pseudo``
adds ``extra_pseudo``, the images ``camsdd pseudolabel`` kept, with their
confidence, soft label and provenance (license, author, url). Its images come
from a stage manifest named by ``CAMSDD_EXTRA_MANIFEST`` (or the config's
``extra_manifest``): the stage directory ``W/pseudolabel`` (its newest complete
run), a Parquet file or a glob. It needs ``key``, ``status``, ``image_path`` and
``label`` (a class folder name); ``confidence``, ``soft_label``, ``source``,
``url``, ``license``, ``author`` and ``query_class`` are used when present, and a
relative ``image_path`` is relative to the work dir: the folder that holds the
manifest's stage folder (``W`` for ``W/pseudolabel/manifest-*.parquet``). Whatever
produced it, every extra image is checked against the validation and test images at
build time (sha256; both pHashes, and the pHash of the mirrored image, within the
dedup radius): one near-duplicate stops the build with an error naming both images,
so no validation or test image leaks into training even if ``camsdd dedup`` was
skipped.

``tfds build camsdd`` without ``--config`` builds every config in ``BUILDER_CONFIGS``:
``pseudo`` is listed there only when ``CAMSDD_EXTRA_MANIFEST`` is set, so the bare
command builds ``official`` and says in one line how to add the pseudo-labeled split.
Both configs can always be named (``--config pseudo``, ``tfds.load("camsdd/pseudo")``).

Under the ``tfds`` command, a mistake in the input (a missing or damaged manifest,
missing images, a leak) ends the command with one ``error:`` line, not a traceback.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys

# The environment only: all file IO goes through epath (TFDS's builder test
# replaces this module's `os` to enforce that).
from os import environ

import apache_beam as beam
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from pipeline.core import classes, dedup, images, schema
from pipeline.core.errors import UserError
from pipeline.store import camsdd_layout, corrections, manifest, parquet_io, reference, workdir

from . import build_report

POLICY_ENV = "CAMSDD_INVALID_IMAGE_POLICY"
EXTRA_MANIFEST_ENV = "CAMSDD_EXTRA_MANIFEST"
#: Splits an extra image must never near-duplicate.
GUARDED_SPLITS = ("validation", "test")
POLICIES = ("report", "fail")
_ISSUES = "issues"
_COUNTER_NAMESPACE = "camsdd"
#: Provenance of the official images in configs with extra splits.
OFFICIAL_PROVENANCE = {
    "source": "camsdd",
    "url": "https://people.ee.ethz.ch/~ihnatova/camsdd.html",
    "license": "CC BY-NC-SA 4.0",
    "author": "Pouget, Ramesh, Giang, Timofte et al. (CamSDD, 2021)",
    "query_class": "",
}


class InvalidCamsddImageError(UserError, ValueError):
    """An invalid image under the ``fail`` policy; the message names the file."""


class LeakError(UserError, ValueError):
    """An extra example near-duplicates a validation or test example."""


class ExtraManifestError(UserError, ValueError):
    """The extra split's manifest cannot be used as given; the message says why."""


def _under_tfds_command() -> bool:
    main = getattr(sys.modules.get("__main__"), "__file__", "") or ""
    return sys.argv[0].rsplit("/", 1)[-1] == "tfds" or "tensorflow_datasets/scripts/cli" in main


def _one_line_user_errors() -> None:
    """Under the ``tfds`` command: a user's mistake prints one ``error:`` line, no traceback.

    Beam may wrap an error raised in a worker; the hook looks through the chain.
    Anything else (a bug) keeps its full traceback.
    """
    previous = sys.excepthook

    def hook(kind, value, traceback):
        error = value
        while error is not None and not isinstance(error, UserError):
            error = error.__cause__ or error.__context__
        if error is None:
            previous(kind, value, traceback)
            return
        print(f"error: {error}", file=sys.stderr)

    sys.excepthook = hook


if _under_tfds_command():
    _one_line_user_errors()
    if not sys.stderr.isatty():  # a log, not a terminal: no progress-bar redraws
        tfds.disable_progress_bar()


def invalid_image_policy() -> str:
    """The policy named by ``CAMSDD_INVALID_IMAGE_POLICY`` (default ``report``)."""
    policy = environ.get(POLICY_ENV, "report").strip().lower() or "report"
    if policy not in POLICIES:
        raise ValueError(
            f"{POLICY_ENV}={environ[POLICY_ENV]!r} is not a policy; use one of {POLICIES}."
        )
    return policy


@dataclasses.dataclass
class CamsddConfig(tfds.core.BuilderConfig):
    """A CamSDD variant.

    Attributes:
      extra_splits: names of extra (pseudo-labeled) splits built on top of the
        official ones. Empty for ``official``; the pseudo-labeling stage adds
        configs that set it.
      extra_manifest: Parquet file or glob of the extra images (else the
        ``CAMSDD_EXTRA_MANIFEST`` environment variable).
    """

    extra_splits: tuple[str, ...] = ()
    extra_manifest: str | None = None


class _CheckImages(beam.DoFn):
    """Reads and checks one labeled file; emits an example and/or an issue."""

    def __init__(self, policy: str, with_provenance: bool = False):
        self._policy = policy
        self._with_provenance = with_provenance

    def _count(self, split: str, name: str) -> None:
        beam.metrics.Metrics.counter(_COUNTER_NAMESPACE, f"{split}/{name}").inc()

    def _refuse(self, f: camsdd_layout.LabeledFile, problem: str) -> None:
        raise InvalidCamsddImageError(
            f"{f.relative_path}: {problem}. (Stopped because {POLICY_ENV}=fail; unset "
            "it to skip undecodable images and repair the others, with a report.)"
        )

    def process(self, f: camsdd_layout.LabeledFile):
        issue = {"split": f.split, "path": f.relative_path, "class_folder": f.class_folder}
        try:
            checked = images.check_camsdd_image(epath.Path(f.path).read_bytes())
        except (images.InvalidImageError, OSError) as error:
            reason = getattr(error, "reason", "unreadable")
            if self._policy == "fail":
                self._refuse(f, f"cannot be used as an image ({error})")
            self._count(f.split, f"skipped/{reason}")
            yield beam.pvalue.TaggedOutput(
                _ISSUES, {**issue, "action": "skipped", "reason": reason, "detail": str(error)}
            )
            return
        if checked.repairs:
            if self._policy == "fail":
                self._refuse(f, "is not a 576x384 RGB JPEG (" + ", ".join(checked.repairs) + ")")
            self._count(f.split, "repaired")
            yield beam.pvalue.TaggedOutput(
                _ISSUES, {**issue, "action": "repaired", "reason": ",".join(checked.repairs)}
            )
        self._count(f.split, "examples")
        example = {
            "image": checked.jpeg,
            "label": f.label,
            "id": f.key,
            "file_name": f.file_name,
        }
        if self._with_provenance:
            soft_label = np.zeros(classes.NUM_CLASSES, np.float32)
            soft_label[f.label] = 1.0
            example.update(OFFICIAL_PROVENANCE, confidence=1.0, soft_label=soft_label, reviewed="")
        yield f.key, example


class _ExamplesFromFiles(beam.PTransform):
    """Labeled files -> (key, example); issues go to a JSON-lines file."""

    def __init__(
        self,
        files: list[camsdd_layout.LabeledFile],
        policy: str,
        issues_path: str,
        with_provenance: bool = False,
    ):
        super().__init__()
        self._files = files
        self._policy = policy
        self._issues_path = issues_path
        self._with_provenance = with_provenance

    def expand(self, pbegin):
        checked = (
            pbegin
            | "ListFiles" >> beam.Create(self._files)
            | "CheckImages"
            >> beam.ParDo(_CheckImages(self._policy, self._with_provenance)).with_outputs(
                _ISSUES, main="examples"
            )
        )
        _ = (
            checked[_ISSUES]
            | "IssueToJson" >> beam.Map(json.dumps, sort_keys=True)
            | "WriteIssues"
            >> beam.io.WriteToText(self._issues_path, shard_name_template="", num_shards=1)
        )
        return checked.examples


def _guard_record(f: camsdd_layout.LabeledFile):
    """Hashes of one validation/test image for the leak check (unreadable: skipped)."""
    try:
        yield dedup.reference_record(f.split, f.key, workdir.read_bytes(f.path))
    except (images.InvalidImageError, OSError):
        return


def guard_rows(rows: list[dict], guard_files: list[camsdd_layout.LabeledFile]) -> list[dict] | None:
    """The guarded images' hashes from ``W/reference`` rows, if they describe these files."""
    keys = {f.key for f in guard_files}
    mine = [r for r in rows if r["key"] in keys]
    if not reference.matches(mine, guard_files):
        return None
    return [r for r in mine if r["status"] == schema.KEPT]


class _RefuseLeaksDoFn(beam.DoFn):
    """Passes extra examples through; raises LeakError on a validation/test near-duplicate."""

    def __init__(self, radius: int, split: str):
        self._radius = radius
        self._split = split
        self._built_for = None

    def process(self, element, guard):
        if self._built_for != id(guard):
            self._guard = guard
            self._sha = {g["sha256"]: g for g in guard}
            self._codes = dedup.reference_codes(guard)
            self._built_for = id(guard)
        key, (example, record) = element
        matched = self._sha.get(record["sha256"])
        distance = 0
        if matched is None and len(self._guard):
            codes = dedup.probe_codes([record])
            hits = dedup.hash_matches(codes, self._codes, self._radius)
            if len(hits):
                best = int(np.argmin(hits.distance))
                matched, distance = self._guard[hits.right[best]], int(hits.distance[best])
        if matched is not None:
            beam.metrics.Metrics.counter(_COUNTER_NAMESPACE, "extra/leaks_refused").inc()
            raise LeakError(
                f"extra example {key} near-duplicates {matched['split']} example "
                f"{matched['key']} (pHash distance {distance} <= {self._radius}). The "
                f"extra split must not leak {' or '.join(GUARDED_SPLITS)} images: run "
                "`camsdd dedup --reference CAMSDD_ROOT` and build from its output."
            )
        beam.metrics.Metrics.counter(_COUNTER_NAMESPACE, f"{self._split}/examples").inc()
        yield key, example


def _extra_example(row: dict) -> tuple[str, tuple[dict, dict]]:
    """(key, (example, hashes)) of one extra row.

    When the row carries the image's sha256 and pHashes (``camsdd pseudolabel`` rows
    do), the bytes are checked against the sha256 and the pHashes are reused: the
    image is not decoded. Otherwise it is checked, repaired if need be, and hashed.
    """
    data = workdir.read_bytes(row["image_path"])
    known = all(row.get(name) is not None for name in ("sha256", "phash", "phash_frame"))
    if known:
        if hashlib.sha256(data).hexdigest() != row["sha256"]:
            raise ExtraManifestError(
                f"{row['image_path']} (extra example {row['key']}) is not the image the "
                "manifest names: its sha256 differs; rerun `camsdd fetch` and the later stages"
            )
        jpeg = data
        record = {name: row[name] for name in ("sha256", "phash", "phash_frame")}
    else:
        jpeg = images.check_camsdd_image(data).jpeg
        record = dedup.reference_record("extra", row["key"], jpeg)
    path = epath.Path(row["image_path"])
    label = classes.CLASS_FOLDERS.index(row["label"])
    soft_label = row.get("soft_label")
    if soft_label is None:
        soft_label = np.zeros(classes.NUM_CLASSES, np.float32)
        soft_label[label] = 1.0
    return row["key"], (
        {
            "image": jpeg,
            "label": label,
            "id": f"extra_pseudo/{row['label']}/{row['key']}",
            "file_name": path.name,
            "confidence": float(
                row.get("confidence") if row.get("confidence") is not None else 1.0
            ),
            "soft_label": np.asarray(soft_label, np.float32),
            **{name: row.get(name) or "" for name in schema.PROVENANCE_FEATURES},
            "reviewed": row.get("review_action") or "",
        },
        record,
    )


class _ExtraExamples(beam.PTransform):
    """Kept rows of an extra-split manifest → examples, refused if they leak."""

    def __init__(
        self,
        rows: list[dict],
        guard_files: list[camsdd_layout.LabeledFile],
        split: str,
        guard_hashes: list[dict] | None = None,
    ):
        super().__init__()
        self._rows = rows
        self._guard_files = guard_files
        self._split = split
        self._guard_hashes = guard_hashes

    def expand(self, pbegin):
        if self._guard_hashes is not None:  # from W/reference: nothing decoded again
            guard = pbegin | "ListGuarded" >> beam.Create(self._guard_hashes)
        else:
            guard = (
                pbegin
                | "ListGuarded" >> beam.Create(self._guard_files)
                | "HashGuarded" >> beam.FlatMap(_guard_record)
            )
        return (
            pbegin
            | "ListExtra" >> beam.Create(self._rows)
            | "ReadExtra" >> beam.Map(_extra_example)
            | "RefuseLeaks"
            >> beam.ParDo(
                _RefuseLeaksDoFn(dedup.DEFAULT_RADIUS, self._split), beam.pvalue.AsList(guard)
            )
        )


#: Manifest columns an extra split needs, and those it uses when present.
EXTRA_REQUIRED = ("key", "status", "image_path", "label")
EXTRA_OPTIONAL = (
    "confidence",
    "soft_label",
    *schema.PROVENANCE_FEATURES,
    "review_action",
    # The image's hashes: its bytes are checked against the sha256, the pHashes reused.
    "sha256",
    "phash",
    "phash_frame",
)


def extra_manifest_paths(pointer: str) -> list[str]:
    """Parquet shards named by a stage directory (its newest complete run), file or glob.

    Raises ExtraManifestError when nothing matches, or when a glob matches shards of
    several runs (their rows would be counted twice).
    """
    location = epath.Path(pointer)
    if location.is_dir():
        shards = [str(p) for p in location.glob("manifest-*.parquet")]
        newest = manifest.newest_complete_run(shards)
        if newest is None:
            raise ExtraManifestError(
                f"{EXTRA_MANIFEST_ENV}={pointer}: the folder holds no complete "
                "manifest-*.parquet run; run `camsdd pseudolabel` first"
            )
        return newest[1]
    paths = sorted(str(p) for p in location.parent.glob(location.name))
    if not paths:
        raise ExtraManifestError(f"{EXTRA_MANIFEST_ENV}={pointer}: no such file")
    runs = manifest.shards_by_run(paths)
    if len(runs) > 1:
        raise ExtraManifestError(
            f"{EXTRA_MANIFEST_ENV}={pointer} matches shards of {len(runs)} runs "
            f"({', '.join(sorted(runs))}); name the stage folder to use its newest run, "
            "or one run's shards"
        )
    return paths


def _missing_files(paths: list[str]) -> list[str]:
    """The paths that do not exist; one listing per folder (a few hundred for 1M images)."""
    by_folder: dict[str, list[str]] = {}
    for path in paths:
        by_folder.setdefault(str(epath.Path(path).parent), []).append(path)
    missing = []
    for folder, wanted in sorted(by_folder.items()):
        try:
            present = {p.name for p in epath.Path(folder).iterdir()}
        except (FileNotFoundError, NotADirectoryError):
            present = set()
        missing += [p for p in wanted if epath.Path(p).name not in present]
    return missing


def manifest_work_dir(path: str) -> epath.Path:
    """The work dir a stage manifest's relative paths refer to: above its stage folder."""
    return epath.Path(path).parent.parent


def read_extra_manifest(pointer: str) -> list[dict]:
    """Kept rows of an extra-split manifest, image paths resolved.

    Raises ExtraManifestError naming the problem: a file that is not Parquet, missing
    columns, unknown labels, images that are not there (all of them are listed), or
    a run that kept nothing.
    """
    rows = []
    paths = extra_manifest_paths(pointer)
    for path in paths:
        try:
            # Whole bytes, then pyarrow: reads the same from local disk and gs://.
            table = parquet_io.table_from_bytes(epath.Path(path).read_bytes())
        except Exception as error:  # pyarrow raises several types for damaged files
            raise ExtraManifestError(
                f"{path} is not a readable Parquet manifest ({str(error).splitlines()[0]})"
            ) from None
        missing = [c for c in EXTRA_REQUIRED if c not in table.column_names]
        if missing:
            raise ExtraManifestError(f"{path}: an extra-split manifest needs columns {missing}")
        columns = [*EXTRA_REQUIRED, *(c for c in EXTRA_OPTIONAL if c in table.column_names)]
        base = manifest_work_dir(path)
        for row in table.select(columns).to_pylist():
            if row["status"] != "kept":
                continue
            image_path = epath.Path(row["image_path"])
            if not image_path.is_absolute() and "://" not in row["image_path"]:
                row["image_path"] = str(base / image_path)
            rows.append(row)
    if not rows:
        raise ExtraManifestError(
            f"{pointer}: the manifest keeps no image (every row is dropped), so there is no "
            "extra split to build; lower `camsdd pseudolabel --target-precision`, review "
            "the candidates, or build `--config official`"
        )
    unknown = sorted({r["label"] for r in rows} - set(classes.CLASS_FOLDERS))
    if unknown:
        raise ExtraManifestError(f"{pointer}: labels {unknown} are not CamSDD class folders")
    absent = _missing_files([r["image_path"] for r in rows])
    if absent:
        raise ExtraManifestError(
            f"{pointer}: {len(absent)} of {len(rows)} kept images are missing: " + ", ".join(absent)
        )
    return rows


OFFICIAL = CamsddConfig(
    name="official",
    description="The official train, validation and test splits only.",
)
PSEUDO = CamsddConfig(
    name="pseudo",
    description="Official splits plus extra_pseudo, the pseudo-labeled images of "
    "`camsdd pseudolabel` (set CAMSDD_EXTRA_MANIFEST to W/pseudolabel).",
    extra_splits=("extra_pseudo",),
)
#: What a reviewer's decision on an official image does to the build.
OFFICIAL_REVIEW_POLICY = (
    "official examples keep their CamSDD labels; relabels and rejects of official training "
    "images change only what the pseudo-label heads learn from"
)
ADD_PSEUDO_HINT = (
    "camsdd/pseudo (official + extra_pseudo) is built when its manifest is named: "
    f"{EXTRA_MANIFEST_ENV}=W/pseudolabel tfds build camsdd --config pseudo ..."
)


class Builder(tfds.core.GeneratorBasedBuilder):
    """DatasetBuilder for CamSDD."""

    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES = {
        "1.0.0": "Official train, validation and test splits.",
        "1.2.0": "The pseudo config: `reviewed` (accept or relabel when a reviewer "
        "decided the label in `camsdd review`).",
        "1.1.0": "The pseudo config: extra_pseudo, pseudo-labeled crawled images with "
        "confidence, soft label and provenance.",
    }
    # What a bare `tfds build camsdd` builds: `pseudo` only when its manifest is named.
    BUILDER_CONFIGS = [OFFICIAL, PSEUDO] if environ.get(EXTRA_MANIFEST_ENV) else [OFFICIAL]
    DEFAULT_BUILDER_CONFIG_NAME = "official"

    @tfds.core.utils.classproperty
    @classmethod
    def builder_configs(cls) -> dict[str, tfds.core.BuilderConfig]:
        """Every config, whatever the environment: `--config pseudo` and loads find both."""
        return {config.name: config for config in (OFFICIAL, PSEUDO)}

    MANUAL_DOWNLOAD_INSTRUCTIONS = camsdd_layout.LAYOUT_HELP

    def _info(self) -> tfds.core.DatasetInfo:
        features = {
            "image": tfds.features.Image(
                shape=(images.TARGET_HEIGHT, images.TARGET_WIDTH, 3),
                encoding_format="jpeg",
            ),
            "label": tfds.features.ClassLabel(names=list(classes.CLASS_NAMES)),
            "id": tfds.features.Text(doc="Stable example id: <split>/<class folder>/<file name>."),
            "file_name": tfds.features.Text(doc="Original file name."),
        }
        if self.builder_config.extra_splits:
            features.update(
                confidence=tfds.features.Scalar(
                    np.float32, doc="Teacher confidence of the label (1 for official images)."
                ),
                soft_label=tfds.features.Tensor(
                    shape=(classes.NUM_CLASSES,),
                    dtype=np.float32,
                    doc="Mean of the K heads' probabilities (one-hot for official images).",
                ),
                source=tfds.features.Text(doc="Where the image came from (camsdd, flickr, ...)."),
                url=tfds.features.Text(doc="The image's source URL."),
                license=tfds.features.Text(doc="The image's license."),
                author=tfds.features.Text(doc="The image's author."),
                query_class=tfds.features.Text(doc="The class the crawler searched for."),
                reviewed=tfds.features.Text(
                    doc="accept or relabel when a reviewer decided this label; empty otherwise."
                ),
            )
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(features),
            supervised_keys=("image", "label"),
            homepage="https://people.ee.ethz.ch/~ihnatova/camsdd.html",
        )

    def _camsdd_root(self, dl_manager: tfds.download.DownloadManager) -> epath.Path:
        manual_dir = dl_manager.manual_dir
        try:
            return camsdd_layout.find_camsdd_root(manual_dir)
        except camsdd_layout.CamsddLayoutError:
            archive = manual_dir / camsdd_layout.ARCHIVE_NAME
            if not archive.exists():
                raise
        logging.info("Extracting %s", archive)
        return camsdd_layout.find_camsdd_root(dl_manager.extract(archive))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        policy = invalid_image_policy()
        scan = camsdd_layout.scan_camsdd(self._camsdd_root(dl_manager))
        camsdd_layout.check_buildable(scan)
        logging.info("%s", scan.summary())
        for warning in scan.count_warnings():
            logging.warning("CamSDD layout: %s", warning)
        self._layout_scan = scan
        self._policy = policy
        extra_splits = self.builder_config.extra_splits
        generators = {
            split: self._generate_examples(
                split_scan.files, policy, str(self._issues_path(split)), bool(extra_splits)
            )
            for split, split_scan in scan.splits.items()
        }
        self._extra = None
        if extra_splits:
            pattern = self.builder_config.extra_manifest or environ.get(EXTRA_MANIFEST_ENV)
            if not pattern:
                raise ExtraManifestError(
                    f"config {self.builder_config.name} has extra splits {extra_splits}: set "
                    f"{EXTRA_MANIFEST_ENV} to the manifest that lists their images (the "
                    "`camsdd pseudolabel` stage directory W/pseudolabel), or build only the "
                    "official splits with `--config official`"
                )
            guard_files = [f for s in GUARDED_SPLITS for f in scan.splits[s].files]
            paths = extra_manifest_paths(pattern)
            rows = read_extra_manifest(pattern)
            runs = sorted(manifest.shards_by_run(paths))
            self._extra = {
                "manifest": pattern,
                "shards": paths,
                "run_id": runs[0] if runs else None,
                "rows": len(rows),
            }
            # The work dir's W/reference already holds the guarded images' hashes when it
            # was made from this same tree: then they are not read and decoded again.
            work = str(manifest_work_dir(paths[0]))
            known = reference.read(work)
            self._extra["official_flags"] = [
                f"{key} ({r['action']}{' to ' + r['new_class'] if r['new_class'] else ''})"
                for key, r in sorted(
                    corrections.by_key(corrections.read(work), corrections.OFFICIAL).items()
                )
            ]
            guard_hashes = guard_rows(known, guard_files)
            self._extra["guard_hashes"] = "W/reference" if guard_hashes is not None else "computed"
            for split in extra_splits:
                generators[split] = _ExtraExamples(rows, guard_files, split, guard_hashes)
        elif PSEUDO not in self.BUILDER_CONFIGS:
            logging.info("%s", ADD_PSEUDO_HINT)
        return generators

    def _generate_examples(self, files, policy, issues_path, with_provenance=False):
        """Beam: reads, checks and yields (key, example) for each file."""
        return _ExamplesFromFiles(files, policy, issues_path, with_provenance)

    def _issues_path(self, split: str) -> epath.Path:
        return self.data_path / f"build_issues-{split}.jsonl"

    def _process_pipeline_result(self, pipeline_result) -> None:
        issues = []
        for split in self._layout_scan.splits:
            path = self._issues_path(split)
            if path.exists():
                issues.extend(json.loads(line) for line in path.read_text().splitlines() if line)
                path.unlink()
        counters = build_report.query_counters(pipeline_result, _COUNTER_NAMESPACE)
        report = build_report.compose(
            dataset=f"{self.name}/{self.builder_config.name}/{self.version}",
            scan=self._layout_scan,
            issues=issues,
            counters=counters,
            policy=self._policy,
        )
        if self._extra is not None:
            report["extra"] = {
                split: {
                    "manifest": self._extra["manifest"],
                    "manifest_shards": self._extra["shards"],
                    "run_id": self._extra["run_id"],
                    "kept_rows": self._extra["rows"],
                    "examples_written": counters.get(f"{split}/examples", 0),
                    "guard_hashes": self._extra["guard_hashes"],
                }
                for split in self.builder_config.extra_splits
            }
            flags = self._extra["official_flags"]
            report["review"] = {"official_flags": flags, "policy": OFFICIAL_REVIEW_POLICY}
            if flags:
                report["warnings"].append(
                    f"{len(flags)} official images were flagged in review (not changed: "
                    f"{OFFICIAL_REVIEW_POLICY}): {', '.join(flags[:10])}"
                )
        (self.data_path / build_report.REPORT_FILE).write_text(json.dumps(report, indent=2))
        # Once, as a table; at WARNING when something was skipped, repaired or is off.
        level = logging.WARNING if build_report.problem_lines(report) else logging.INFO
        logging.log(level, "%s", build_report.render_text(report))
