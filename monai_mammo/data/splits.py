"""Patient-level, label-stratified train/validation/test splits of datalist items.

All images of a patient go to the same split, so that no patient leaks from training into
evaluation. The default ratios ``(0.765, 0.085, 0.15)`` are the papers' protocol (e.g. Shen
et al. 2019 on CBIS-DDSM): 85 % training / 15 % test by patient, then 10 % of the training
patients held out for validation (0.85 x 0.9 = 0.765, 0.85 x 0.1 = 0.085).

Splits are returned under the MONAI datalist keys ``"training"``, ``"validation"`` and
``"test"`` (ready for :meth:`~monai_mammo.data.indexers.common.IndexResult.write`), and every
returned item's ``"split"`` is set to ``"train"``, ``"val"`` or ``"test"``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from monai_mammo.data.schema import PATIENT_KEY
from monai_mammo.exceptions import MammoConfigError, MammoDataError

__all__ = ["split_by_patient", "assert_patient_disjoint", "SPLIT_PRESETS", "SPLIT_KEYS"]

SPLIT_PRESETS: dict[str, tuple[float, float, float]] = {
    "paper": (0.765, 0.085, 0.15),
    "inbreast": (0.7, 0.0, 0.3),
}
# datalist key -> the item's "split" value
SPLIT_KEYS = {"training": "train", "validation": "val", "test": "test"}
_OFFICIAL_TRAIN = ("train", "training")
_OFFICIAL_TEST = ("test",)


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(r) for r in ratios)
    if len(values) != 3 or any(not 0.0 <= r <= 1.0 for r in values) or abs(sum(values) - 1.0) > 1e-6:
        raise MammoConfigError(
            f"ratios must be three fractions (train, val, test) in [0, 1] summing to 1, got {tuple(ratios)}"
        )
    return values[0], values[1], values[2]


def _deal(
    patients: list[str], strata: dict[str, int], ratios: Sequence[float], rng: np.random.Generator
) -> list[int]:
    """Split index of each patient: shuffled within strata, then dealt to the most owed split.

    Walking the patients stratum by stratum, each one goes to the split whose count lags
    most behind ``ratio x patients seen``; every prefix (hence every stratum and the whole)
    is within one patient of the target proportions.
    """
    by_stratum: dict[int, list[str]] = defaultdict(list)
    for patient in patients:
        by_stratum[strata[patient]].append(patient)
    order: list[str] = []
    for stratum in sorted(by_stratum):
        members = by_stratum[stratum]
        order += [members[i] for i in rng.permutation(len(members))]
    weights = np.asarray(ratios, dtype=float)
    counts = np.zeros(len(weights))
    assignment = {}
    for seen, patient in enumerate(order, start=1):
        owed = np.where(weights > 0, seen * weights - counts, -np.inf)
        choice = int(np.argmax(owed))
        counts[choice] += 1
        assignment[patient] = choice
    return [assignment[p] for p in patients]


def split_by_patient(
    items: Sequence[Mapping[str, Any]],
    *,
    ratios: Sequence[float] = SPLIT_PRESETS["paper"],
    seed: int = 0,
    stratify_key: str | None = "label",
    use_official: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """Split datalist items by patient, stratified on each patient's maximum label.

    Patients are grouped by ``item["patient_id"]``; a patient's stratum is the maximum of
    ``item[stratify_key]`` over their images (``None`` values form their own stratum), so
    that malignant and benign/normal patients are spread in the same proportions over the
    splits. The result depends only on the items, ``ratios`` and ``seed``.

    Args:
        items: datalist items (schema in :mod:`monai_mammo.data.schema`).
        ratios: (train, validation, test) fractions of patients, summing to 1; see
            :data:`SPLIT_PRESETS` (``"paper"``: 85/15 with 10 % of the training patients
            for validation; ``"inbreast"``: 70/30, no validation).
        seed: random seed of the patient shuffle.
        stratify_key: item key to stratify on, None for no stratification.
        use_official: keep the dataset's official split (``item["split"]`` ``"train"`` or
            ``"test"``, e.g. the CBIS-DDSM CSVs): patients with any official test image form
            the test split, and validation patients are drawn from the remaining (training)
            patients in the proportion ``ratios[1] / (ratios[0] + ratios[1])``.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}``: shallow copies of the
        items, in their input order, with ``"split"`` set to ``"train"``/``"val"``/``"test"``.

    Raises:
        MammoConfigError: invalid ratios, or ``use_official`` with ratios giving no
            training share.
        MammoDataError: an item without a patient id, or with ``use_official`` an item
            whose official split is not train/test (naming the image).

    Example::

        splits = split_by_patient(result.items, ratios=SPLIT_PRESETS["paper"], seed=0)
        result.write("datalist.json", splits)
    """
    train, val, test = _check_ratios(ratios)
    patients: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        patient = item.get(PATIENT_KEY)
        if patient is None or str(patient).strip() == "":
            raise MammoDataError("item has no patient_id; a patient-level split needs one", item.get("image"))
        patients.setdefault(str(patient), []).append(index)
    strata = {}
    for patient, indices in patients.items():
        values = [items[i].get(stratify_key) for i in indices] if stratify_key else []
        known = [int(v) for v in values if v is not None]
        strata[patient] = max(known) if known else -1
    ordered = sorted(patients)
    rng = np.random.default_rng(seed)
    if use_official:
        if train + val <= 0:
            raise MammoConfigError(f"use_official needs a training share in ratios, got {tuple(ratios)}")
        official_test = set()
        for patient in ordered:
            for i in patients[patient]:
                split = items[i].get("split")
                if split not in _OFFICIAL_TRAIN + _OFFICIAL_TEST:
                    raise MammoDataError(
                        f"official split {split!r} is not one of {_OFFICIAL_TRAIN + _OFFICIAL_TEST}",
                        items[i].get("image"),
                    )
                if split in _OFFICIAL_TEST:
                    official_test.add(patient)
        rest = [p for p in ordered if p not in official_test]
        dealt = _deal(rest, strata, (train / (train + val), val / (train + val)), rng)
        choice = dict(zip(rest, dealt)) | dict.fromkeys(official_test, 2)
    else:
        choice = dict(zip(ordered, _deal(ordered, strata, (train, val, test), rng)))
    keys = list(SPLIT_KEYS)
    index_split = {i: keys[choice[patient]] for patient, indices in patients.items() for i in indices}
    out: dict[str, list[dict[str, Any]]] = {key: [] for key in keys}
    for index, item in enumerate(items):
        key = index_split[index]
        out[key].append({**item, "split": SPLIT_KEYS[key]})
    return out


def assert_patient_disjoint(splits: Mapping[str, Any]) -> None:
    """Check that no patient appears in two splits.

    Args:
        splits: split name -> items (e.g. the output of :func:`split_by_patient` or a
            loaded datalist: values that are not lists, like its ``"summary"``, are ignored).

    Raises:
        MammoDataError: naming every leaked patient id and the splits it appears in.

    Example::

        assert_patient_disjoint({"training": train_items, "test": test_items})
    """
    seen: dict[str, set[str]] = defaultdict(set)
    for name, items in splits.items():
        if not isinstance(items, (list, tuple)):
            continue
        for item in items:
            seen[str(item.get(PATIENT_KEY))].add(name)
    leaks = {patient: sorted(names) for patient, names in sorted(seen.items()) if len(names) > 1}
    if leaks:
        listed = "; ".join(f"{patient} in {', '.join(names)}" for patient, names in leaks.items())
        raise MammoDataError(f"{len(leaks)} patient(s) appear in more than one split: {listed}")
