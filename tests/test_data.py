"""The data stage: the RFS readers (mini, tiered, CIFAR-FS/FC100) on fabricated files in their exact formats, the
safe unpickler against malicious files, the prepared format, the synthetic generator, the episode sampler."""
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from metantk_nas.data import transforms as T
from metantk_nas.data.episodes import EpisodeSampler
from metantk_nas.data.prepared import load_split, prepare_dataset
from metantk_nas.data.readers import (MINI_FILES, read_cifar_style, read_mini_imagenet, read_tiered_imagenet)
from metantk_nas.data.safe_pickle import safe_load
from metantk_nas.data.synthetic import SyntheticSpec, generate
from metantk_nas.errors import DataError

from helpers import ROOT, write_pickle


# -- readers on tiny files in the real formats ---------------------------------------------------------------------
def test_mini_reader_remaps_labels_and_keeps_class_names(mini_dir):
    splits = read_mini_imagenet(mini_dir)
    assert set(splits) == {"train", "val", "test"}
    test = splits["test"]
    assert test.images.shape == (15, 84, 84, 3) and test.images.dtype == np.uint8
    assert sorted(set(test.labels.tolist())) == [0, 1, 2, 3, 4]
    assert test.class_names[0] == "n00000080"


def test_tiered_reader(tiered_dir):
    splits = read_tiered_imagenet(tiered_dir)
    assert splits["val"].labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert splits["train"].images.shape == (10, 84, 84, 3)


def test_cifar_reader_remaps_by_first_appearance(cifar_dir):
    s = read_cifar_style(cifar_dir)["train"]
    assert s.labels.tolist() == [0, 1, 0, 2, 1, 2, 3, 3, 4, 4]
    assert s.class_names == ["17", "3", "42", "99", "5"]


def test_cifar_files_are_found_under_either_name(cifar_dir, tmp_path):
    """RFS names them {split}.pickle; many copies name them CIFAR_FS_{split}.pickle or FC100_{split}.pickle: both
    are read, the same images; neither there is one line naming both names and the config key."""
    import shutil

    from metantk_nas.data.prepared import raw_files

    for fmt, prefix in (("cifar_fs", "CIFAR_FS"), ("fc100", "FC100")):
        other = tmp_path / fmt
        other.mkdir()
        for split in ("train", "val", "test"):
            shutil.copy(cifar_dir / f"{split}.pickle", other / f"{prefix}_{split}.pickle")
        assert raw_files({"format": fmt, "source": str(other)}, fmt) == \
            [other / f"{prefix}_{s}.pickle" for s in ("train", "val", "test")]
        ours = read_cifar_style(other, fmt)["val"]
        assert ours.labels.tolist() == read_cifar_style(cifar_dir)["val"].labels.tolist()
        assert (ours.images == read_cifar_style(cifar_dir)["val"].images).all()
    (tmp_path / "cifar_fs" / "CIFAR_FS_test.pickle").unlink()
    with pytest.raises(DataError, match=r"cifar_fs/test\.pickle: file not found \(nor CIFAR_FS_test\.pickle\) "
                                        r"\(the raw files of data\.datasets\.c\.source\)$"):
        raw_files({"format": "cifar_fs", "source": str(tmp_path / "cifar_fs")}, "c")


def test_prepare_mini_writes_the_prepared_format(mini_dir, tmp_path):
    out = tmp_path / "prep"
    manifest = prepare_dataset("mini", {"format": "mini_imagenet", "source": str(mini_dir)}, out)
    assert manifest["splits"]["train"]["counts"] == [3] * 5
    assert len(manifest["sources"]) == 3 and all(len(h) == 64 for h in manifest["sources"].values())
    split = load_split(out, "train")
    assert isinstance(split.images, np.memmap) and split.mean[0] == pytest.approx(120.39586422 / 255)
    assert (out / "manifest.json.prov.json").exists()


# -- malicious and broken input -------------------------------------------------------------------------------------
class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    Evil.marker = marker
    path = write_pickle(tmp_path / "evil.pickle", {"data": Evil(), "labels": [0]})
    with pytest.raises(DataError, match=r"evil.pickle: refused to unpickle (posix|os)\.system"):
        safe_load(path)
    assert not marker.exists()


def test_malicious_pickle_in_a_dataset_fails_prepare_naming_the_file(mini_dir, tmp_path):
    marker = tmp_path / "pwned"
    Evil.marker = marker
    write_pickle(mini_dir / MINI_FILES["val"], {"data": Evil(), "labels": [0]})
    with pytest.raises(DataError, match="miniImageNet_category_split_val.pickle: refused"):
        prepare_dataset("mini", {"format": "mini_imagenet", "source": str(mini_dir)}, tmp_path / "out")
    assert not marker.exists()


# Python-2-era pickles written by hand (protocol 0): copy_reg/copyreg._reconstructor(cls, base, state) rebuilds
# builtin containers only; the bytes are the pickle opcodes, so the expectation does not come from our code.
RECONSTRUCT = "c{mod}\n_reconstructor\n(c__builtin__\n{cls}\nc__builtin__\n{base}\n{state}tR."


@pytest.mark.parametrize("mod", ["copy_reg", "copyreg"])
def test_copyreg_reconstructor_rebuilds_builtin_containers_only(tmp_path, mod):
    path = tmp_path / "old.pickle"
    path.write_bytes(RECONSTRUCT.format(mod=mod, cls="object", base="object", state="N").encode())
    assert type(safe_load(path)) is object                                  # base.__new__(cls): state None
    path.write_bytes(RECONSTRUCT.format(mod=mod, cls="list", base="list", state="(lp0\nI1\naI2\na").encode())
    assert safe_load(path) == [1, 2]                                        # cls(state)
    for cls, base in (("int", "object"), ("list", "int")):                  # not a builtin container / base
        path.write_bytes(RECONSTRUCT.format(mod=mod, cls=cls, base=base, state="N").encode())
        with pytest.raises(DataError, match=rf"^{path}: refused to unpickle copyreg\._reconstructor\("
                                            rf"<class '{cls}'>\) \(only numpy arrays"):
            safe_load(path)


def test_python2_byte_strings_decode_as_latin1(tmp_path):
    """RFS's pickles come from Python 2: a str there is bytes, read as latin-1 (an ASCII decode would fail)."""
    path = tmp_path / "py2.pickle"
    path.write_bytes(b"\x80\x02U\x04caf\xe9q\x00.")       # protocol 2, SHORT_BINSTRING 'caf\xe9'
    assert safe_load(path) == "caf\u00e9"


def test_safe_load_messages_name_the_file_and_the_fault(tmp_path):
    with pytest.raises(DataError, match=rf"^{tmp_path / 'none.pickle'}: file not found$"):
        safe_load(tmp_path / "none.pickle")
    (tmp_path / "empty.pickle").write_bytes(b"")
    with pytest.raises(DataError, match=rf"^{tmp_path / 'empty.pickle'}: file is empty$"):
        safe_load(tmp_path / "empty.pickle")
    (tmp_path / "cut.pickle").write_bytes(pickle.dumps([1, 2, 3], protocol=2)[:-3])
    with pytest.raises(DataError, match=rf"^{tmp_path / 'cut.pickle'}: corrupt or truncated pickle \((EOFError|"
                                        r"UnpicklingError): "):
        safe_load(tmp_path / "cut.pickle")


def test_missing_file(mini_dir):
    (mini_dir / MINI_FILES["test"]).unlink()
    with pytest.raises(DataError, match="miniImageNet_category_split_test.pickle: file not found"):
        read_mini_imagenet(mini_dir)


def test_truncated_pickle(mini_dir):
    p = mini_dir / MINI_FILES["train"]
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(DataError, match="train_phase_train.pickle: corrupt or truncated"):
        read_mini_imagenet(mini_dir)


def test_wrong_shape_and_dtype(mini_dir, tmp_path):
    write_pickle(mini_dir / MINI_FILES["train"], {"data": np.zeros((4, 84, 84), np.uint8), "labels": [0] * 4})
    with pytest.raises(DataError, match=r"train_phase_train.pickle: images must have shape \(N, H, W, 3\)"):
        read_mini_imagenet(mini_dir)
    write_pickle(mini_dir / MINI_FILES["train"], {"data": np.zeros((4, 84, 84, 3), np.float32), "labels": [0] * 4})
    with pytest.raises(DataError, match="images must be uint8, got float32"):
        read_mini_imagenet(mini_dir)
    write_pickle(mini_dir / MINI_FILES["train"], {"data": np.zeros((4, 84, 84, 3), np.uint8), "labels": [0] * 3})
    with pytest.raises(DataError, match="3 labels for 4 images"):
        read_mini_imagenet(mini_dir)


def test_corrupt_npz_and_wrong_tiered_release(tiered_dir):
    (tiered_dir / "val_images.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="val_images.npz: corrupt or truncated npz"):
        read_tiered_imagenet(tiered_dir)


def test_original_tiered_release_gets_a_hint(tiered_dir):
    write_pickle(tiered_dir / "train_labels.pkl", {"label_specific": [0], "label_general": [0]})
    with pytest.raises(DataError, match="original tieredImageNet release"):
        read_tiered_imagenet(tiered_dir)


def test_missing_dataset_directory(tmp_path):
    with pytest.raises(DataError, match="dataset directory not found"):
        prepare_dataset("mini", {"format": "mini_imagenet", "source": str(tmp_path / "nowhere")}, tmp_path / "o")


# -- idempotence and determinism ------------------------------------------------------------------------------------
def test_rerun_on_unchanged_input_changes_nothing(mini_dir, tmp_path):
    out = tmp_path / "prep"
    cfg = {"format": "mini_imagenet", "source": str(mini_dir)}
    prepare_dataset("mini", cfg, out)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    prepare_dataset("mini", cfg, out)
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()} == before


def test_synthetic_generator_is_deterministic_and_shaped_like_mini():
    spec = SyntheticSpec(seed=7, images_per_class=5, image_size=12)
    a, b = generate(spec), generate(spec)
    for split in a:
        assert a[split].images.tobytes() == b[split].images.tobytes()
    assert [len(a[s].class_names) for s in ("train", "val", "test")] == [64, 16, 20]
    assert generate(SyntheticSpec(seed=8, images_per_class=5, image_size=12))["train"].images.tobytes() != \
        a["train"].images.tobytes()


def test_synthetic_classes_are_separable_but_varied():
    """Nearest class mean on raw pixels: far above chance (classes differ), far below 100% (within-class variety)."""
    s = generate(SyntheticSpec(seed=0, train_classes=5, val_classes=5, test_classes=5, images_per_class=40, image_size=16))["test"]
    x = s.images.reshape(len(s.labels), -1).astype(np.float64)
    train, test = np.arange(len(x)) % 2 == 0, np.arange(len(x)) % 2 == 1
    means = np.stack([x[train & (s.labels == c)].mean(0) for c in range(5)])
    pred = np.argmin(((x[test][:, None] - means[None]) ** 2).sum(-1), 1)
    acc = (pred == s.labels[test]).mean()
    assert 0.35 < acc < 0.99


def test_episode_sampler_is_deterministic_and_uses_its_own_rng(tiny_prepared):
    labels = load_split(tiny_prepared, "test").labels
    s1, s2 = EpisodeSampler(labels, 5, 2, 3, seed=4), EpisodeSampler(labels, 5, 2, 3, seed=4)
    np.random.seed(0)
    e1 = s1.episode(11)
    np.random.seed(123)  # the global RNG has no influence
    e2 = s2.episode(11)
    assert np.array_equal(e1.support, e2.support) and np.array_equal(e1.query, e2.query)
    assert not np.array_equal(s1.episode(12).query, e1.query)
    assert len(set(e1.support) & set(e1.query)) == 0
    assert np.array_equal(labels[e1.support], np.repeat(labels[e1.support][::2], 2))  # class-major
    assert e1.support_labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_episodes_label_queries_by_their_class_and_use_only_classes_with_enough_images():
    """Hand-built labels: classes 0-4 have exactly shots + queries = 5 images (eligible: >=), class 5 has 4
    (never drawn), class 6 has 9.  Every episode: 5 classes, local label k is one real class for its supports and
    its queries, `queries` queries per label, supports and queries disjoint; batch() is episode() per index."""
    labels = np.array([0] * 5 + [1] * 5 + [2] * 5 + [3] * 5 + [4] * 5 + [5] * 4 + [6] * 9)
    sampler = EpisodeSampler(labels, ways=5, shots=2, queries=3, seed=1)
    assert sorted(sampler.classes.tolist()) == [0, 1, 2, 3, 4, 6]
    drawn = set()
    for i in range(40):
        e = sampler.episode(i)
        assert e.query_labels.tolist() == [k for k in range(5) for _ in range(3)]
        assert e.support_labels.tolist() == [k for k in range(5) for _ in range(2)]
        for k in range(5):
            real = set(labels[e.support[e.support_labels == k]]) | set(labels[e.query[e.query_labels == k]])
            assert len(real) == 1
        assert len(set(labels[e.query])) == 5 and not set(e.support) & set(e.query)
        drawn |= set(labels[e.query].tolist())
    assert 5 not in drawn and drawn == {0, 1, 2, 3, 4, 6}
    batch = sampler.batch(np.array([3, 7]))
    assert [b.query.tolist() for b in batch] == [sampler.episode(3).query.tolist(), sampler.episode(7).query.tolist()]
    EpisodeSampler(labels[labels < 5], ways=5, shots=2, queries=3, seed=0)       # exactly `ways` classes suffice
    with pytest.raises(ValueError, match=r"^need 6 classes with >= 5 images each, have 5$"):
        EpisodeSampler(labels[labels < 5], ways=6, shots=2, queries=3, seed=0)


# -- transforms ------------------------------------------------------------------------------------------------------
def test_transforms_semantics():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(6, 10, 10, 3), dtype=np.uint8)
    x = T.to_float(imgs)
    assert x.shape == (6, 3, 10, 10) and float(x.max()) <= 1
    g = torch.Generator().manual_seed(0)
    assert torch.equal(T.random_crop(x, 10, 0, g), x)
    crop = T.random_crop(x, 10, 3, g)
    assert crop.shape == x.shape
    # every crop is a shifted window of the zero-padded image
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3))
    for i in range(6):
        assert any(torch.equal(crop[i], padded[i, :, a:a + 10, b:b + 10]) for a in range(7) for b in range(7))
    flipped = T.random_hflip(x, torch.Generator().manual_seed(1), p=1.0)
    assert torch.equal(flipped, x.flip(-1))
    assert torch.equal(T.color_jitter(x, 0.0, g), x)
    jit = T.color_jitter(x, 0.4, g)
    assert jit.shape == x.shape and float(jit.min()) >= 0 and float(jit.max()) <= 1
    n = T.normalize(x, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert torch.allclose(n, (x - 0.5) / 0.25)
    assert T.resize(x, 4).shape == (6, 3, 4, 4)


def test_train_augment_deterministic_per_generator():
    imgs = np.random.default_rng(0).integers(0, 256, size=(4, 12, 12, 3), dtype=np.uint8)
    aug = T.TrainAugment(12, 2, 0.4, (0.5,) * 3, (0.2,) * 3)
    a = aug(imgs, torch.Generator().manual_seed(5))
    b = aug(imgs, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, aug(imgs, torch.Generator().manual_seed(6)))


def _pil_jitter(img: np.ndarray, factors, order) -> np.ndarray:
    """The original's per-image ColorJitter on PIL images (ImageEnhance, uint8 between steps)."""
    from PIL import Image, ImageEnhance

    im = Image.fromarray(img)
    enhance = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
    for op in order:
        im = enhance[int(op)](im).enhance(float(factors[int(op)]))
    return np.asarray(im)


def test_train_augment_matches_a_pil_per_image_reference():
    """The batched uint8 path (crop + flip + jitter + normalise) against crop/flip by slicing and PIL's ImageEnhance
    per image with the same draws: equal up to PIL's uint8 rounding between the jitter steps."""
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 256, size=(16, 20, 20, 3), dtype=np.uint8)
    mean, std = (0.4, 0.45, 0.5), (0.2, 0.25, 0.3)
    out = T.TrainAugment(20, 4, 0.4, mean, std)(imgs, torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)                     # replay the draws in the documented order
    oy = torch.randint(0, 20 + 8 - 20 + 1, (16,), generator=g).tolist()
    ox = torch.randint(0, 20 + 8 - 20 + 1, (16,), generator=g).tolist()
    flip = (torch.rand(16, generator=g) < 0.5).tolist()
    factors, order = T.jitter_params(16, 0.4, g)
    padded = np.pad(imgs, ((0, 0), (4, 4), (4, 4), (0, 0)))
    ref = []
    for i in range(16):
        win = padded[i, oy[i]:oy[i] + 20, ox[i]:ox[i] + 20]
        win = np.ascontiguousarray(win[:, ::-1] if flip[i] else win)
        ref.append(_pil_jitter(win, factors[i].numpy(), order[i].numpy()))
    ref = torch.as_tensor(np.stack(ref)).permute(0, 3, 1, 2).float()
    ours = out * torch.tensor(std).view(1, 3, 1, 1) * 255 + torch.tensor(mean).view(1, 3, 1, 1) * 255
    diff = ours - ref
    # PIL truncates to uint8 after each of the three blends, so it sits about one grey level below on average
    assert float(diff.abs().max()) <= 5.0 and 0.0 <= float(diff.mean()) <= 1.5
    assert sum(flip) not in (0, 16) and len(set(map(tuple, order.tolist()))) > 1   # the draw exercised both cases


def test_fused_crop_flip_equals_the_separate_transforms():
    imgs = torch.as_tensor(np.random.default_rng(4).integers(0, 256, size=(8, 12, 12, 3), dtype=np.uint8))
    fused = T.crop_flip_to_float(imgs, 10, 2, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    separate = T.random_hflip(T.random_crop(imgs, 10, 2, g, channels_last=True), g, channels_last=True)
    assert torch.equal(fused, separate.permute(0, 3, 1, 2).float())


@pytest.fixture
def prepared_copy(tiny_prepared, tmp_path):
    import shutil

    return Path(shutil.copytree(tiny_prepared, tmp_path / "tiny"))


@pytest.mark.parametrize("damage, name", [
    (lambda d: (d / "train_images.npy").write_bytes((d / "train_images.npy").read_bytes()[:5000]), "train_images.npy"),
    (lambda d: (d / "train_labels.npy").write_bytes((d / "train_labels.npy").read_bytes()[:100]), "train_labels.npy"),
    (lambda d: (d / "train_images.npy").write_bytes(b"not an npy file at all"), "train_images.npy"),
    (lambda d: (d / "train_images.npy").unlink(), "train_images.npy"),
    (lambda d: (d / "manifest.json").write_text('{"splits": {"train": '), "manifest.json"),
    (lambda d: (d / "manifest.json").write_text('["a", "list"]'), "manifest.json"),
    (lambda d: (d / "manifest.json").write_text('{"splits": {}}'), "manifest.json"),
    (lambda d: (d / "manifest.json").unlink(), "manifest.json"),
], ids=["truncated-images", "truncated-labels", "not-npy", "missing-npy", "corrupt-manifest", "manifest-not-a-map",
        "manifest-without-normalisation", "missing-manifest"])
def test_damaged_prepared_data_is_a_data_error_naming_the_file(prepared_copy, damage, name):
    damage(prepared_copy)
    with pytest.raises(DataError) as e:
        load_split(prepared_copy, "train")
    assert str(e.value).startswith(str(prepared_copy / name) + ":"), str(e.value)


def test_a_stage_on_truncated_prepared_data_prints_one_line_naming_the_file(prepared_copy, tmp_path):
    """Through a stage script: exit 2, the last stderr line names the file, no traceback."""
    from helpers import run_script

    npy = prepared_copy / "train_images.npy"
    npy.write_bytes(npy.read_bytes()[:5000])
    proc = run_script(ROOT / "scripts/search.py", "--configfile", ROOT / "config/config.yaml",
                      ROOT / "tests/configs/tiny.yaml", "--dataset", "synthetic", "--method", "linreg", "--cells", "5",
                      "--seed", "0", "--no-progress", "--prepared", prepared_copy, "--out", tmp_path / "run",
                      check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {npy}: unreadable prepared data"), proc.stderr


def test_digits_dataset_is_the_cifar_fs_format_with_rotated_and_inverted_classes(tmp_path):
    """scripts/make_digits.py: 8 classes per digit (4 quarter turns x as written / inverted), split by digit
    (train 0-5: 48 classes, val 7: 8, test 6 8 9: 24), read back by the CIFAR-FS reader; one class checked pixel by
    pixel against scikit-learn's scan, rotated and inverted here by hand."""
    from sklearn.datasets import load_digits

    from helpers import run_script

    run_script(ROOT / "scripts/make_digits.py", "--out", tmp_path, "--per-class", "20")
    splits = read_cifar_style(tmp_path)
    assert {k: (len(v.labels), int(v.labels.max()) + 1) for k, v in splits.items()} == {
        "train": (48 * 20, 48), "val": (8 * 20, 8), "test": (24 * 20, 24)}
    assert splits["train"].images.shape[1:] == (32, 32, 3) and splits["train"].images.dtype == np.uint8
    digits = load_digits()
    seven = digits.images[digits.target == 7][0]          # val class 5: digit 7, one quarter turn, inverted
    img = splits["val"].images[splits["val"].labels == 5][0]
    for i in range(8):
        for j in range(8):
            want = round((16 - seven[j, 7 - i]) * 255 / 16)   # np.rot90 by one turn: out[i, j] = in[j, 7 - i]
            assert (img[4 * i:4 * i + 4, 4 * j:4 * j + 4] == want).all(), (i, j)
    bad = run_script(ROOT / "scripts/make_digits.py", "--out", tmp_path / "x", "--per-class", "5", check=False)
    assert bad.returncode == 2 and "needs at least 20 images per class" in bad.stderr
