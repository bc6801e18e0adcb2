"""Finding checkpoints in every form checkpoint.path takes, and explaining misfits."""

import shutil
import tarfile

import pytest

from exportkit import checkpoint
from exportkit.errors import CheckpointError
from tests.helpers import CIFAR8, export_in_process, integer_versions

# The smallest registered network: what these tests check is not ResNet-specific.


def _locate(path, notices=None, **kwargs):
    notices = notices if notices is not None else []
    return checkpoint.locate(path=str(path) if path else None, url=kwargs.get("url"),
                             cache_dir=str(kwargs.get("cache_dir", "/nonexistent-cache")), notify=notices.append)


def test_model_dir_follows_its_checkpoint_file(cifar8_model_dir):
    assert _locate(cifar8_model_dir) == cifar8_model_dir / "model.ckpt-1234"


def test_prefix_and_index_file_are_accepted(cifar8_model_dir):
    prefix = cifar8_model_dir / "model.ckpt-1234"
    assert _locate(prefix) == prefix
    assert _locate(f"{prefix}.index") == prefix


def test_stale_checkpoint_file_falls_back_to_the_newest_step_with_a_notice(cifar8_model_dir, tmp_path):
    copied = tmp_path / "copied_model_dir"
    shutil.copytree(cifar8_model_dir, copied)
    # An older step beside it, to prove the newest is chosen.
    for f in copied.glob("model.ckpt-1234.*"):
        shutil.copy(f, copied / f.name.replace("1234", "99"))
    (copied / "checkpoint").write_text(
        'model_checkpoint_path: "/mnt/train-host/resnet/model.ckpt-1234"\n'
        'all_model_checkpoint_paths: "/mnt/train-host/resnet/model.ckpt-1234"\n'
    )
    notices = []
    assert _locate(copied, notices) == copied / "model.ckpt-1234"
    assert len(notices) == 1 and "/mnt/train-host/resnet/model.ckpt-1234" in notices[0]
    assert "newest checkpoint in the folder, model.ckpt-1234" in notices[0]


def test_stale_checkpoint_file_with_nothing_to_fall_back_to(tmp_path):
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "/gone/model.ckpt-5"\n')
    with pytest.raises(CheckpointError, match="names /gone/model.ckpt-5, which does not exist"):
        _locate(tmp_path)


def test_tar_gz_is_unpacked_once_into_the_cache(cifar8_model_dir, tmp_path):
    archive = tmp_path / "cifar8_2026_11_25.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(cifar8_model_dir, arcname="cifar8_2026_11_25")
    notices = []
    found = _locate(archive, notices, cache_dir=tmp_path / "cache")
    assert found.name == "model.ckpt-1234" and str(found).startswith(str(tmp_path / "cache"))
    # The Estimator's checkpoint file names the training machine's paths: fallback.
    assert any("unpacking" in n for n in notices)
    again = []
    assert _locate(archive, again, cache_dir=tmp_path / "cache") == found
    assert not any("unpacking" in n for n in again)


@pytest.mark.parametrize("name", ["nothing_here", "model.ckpt-1"])
def test_missing_checkpoint_names_the_path(tmp_path, name):
    with pytest.raises(CheckpointError, match=f"checkpoint.path={tmp_path / name}: no such model_dir"):
        _locate(tmp_path / name)


def test_empty_model_dir(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        _locate(tmp_path)


def test_download_failure_offline_says_to_pass_checkpoint_path(tmp_path):
    # Port 9 (discard) on loopback: refused at once, no traffic leaves the machine.
    with pytest.raises(CheckpointError) as err:
        _locate(None, url="http://127.0.0.1:9/resnet50_2017_11_30.tar.gz", cache_dir=tmp_path)
    assert "cannot download the default checkpoint" in str(err.value)
    assert "pass checkpoint.path=" in str(err.value)
    assert not list((tmp_path / "downloads").iterdir())


def test_read_gives_variables_and_global_step(cifar8_model_dir):
    ckpt = checkpoint.read(cifar8_model_dir / "model.ckpt-1234")
    assert ckpt.global_step == 1234
    assert ckpt.variables["conv2d/kernel"] == (3, 3, 3, 16)
    assert ckpt.variables["dense/kernel"] == (64, 10)
    assert "conv2d/kernel/Momentum" in ckpt.variables


def test_misfit_names_variables_shapes_and_the_size_that_fits():
    ckpt = checkpoint.Checkpoint(prefix="/c/model.ckpt-1", global_step=1,
                                 variables={"dense/kernel": (512, 1001), "conv2d/kernel": (7, 7, 3, 64), "global_step": ()})
    graph = {"dense/kernel": (2048, 1001), "conv2d/kernel": (7, 7, 3, 64), "conv2d_60/kernel": (1, 1, 512, 2048)}
    alternatives = [("model.size=34", lambda: {"dense/kernel": (512, 1000)}),
                    ("model.size=18", lambda: {"dense/kernel": (512, 1001), "conv2d/kernel": (7, 7, 3, 64)})]
    with pytest.raises(CheckpointError) as err:
        checkpoint.check_fits(ckpt, graph, describe="model=resnet model.size=50", alternatives=alternatives)
    message = str(err.value)
    assert "does not fit model=resnet model.size=50; it fits model.size=18" in message
    assert "dense/kernel: network [2048, 1001], checkpoint [512, 1001]" in message
    assert "conv2d_60/kernel [1, 1, 512, 2048]" in message
    assert len(message.splitlines()) == 2


def test_fitting_checkpoint_ignores_extra_entries():
    ckpt = checkpoint.Checkpoint(prefix="p", global_step=None,
                                 variables={"a": (1,), "a/Momentum": (1,), "global_step": ()})
    checkpoint.check_fits(ckpt, {"a": (1,)}, describe="x")


def _with_nan(model_dir, tmp_path, name):
    """A copy of the checkpoint, in the same V2 layout, with NaN and Inf in ``name``."""
    import numpy as np
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(model_dir))
    names = sorted(reader.get_variable_to_shape_map())
    tensors = [reader.get_tensor(n) for n in names]
    broken = tensors[names.index(name)].copy()
    broken.flat[0], broken.flat[1] = np.nan, np.inf
    tensors[names.index(name)] = broken
    prefix = str(tmp_path / "diverged" / "model.ckpt-9")
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors)
    return prefix


def test_non_finite_weights_are_refused_at_restore_whatever_verify_says(cifar8_model_dir, tmp_path):
    prefix = _with_nan(cifar8_model_dir, tmp_path, "dense/kernel")
    with pytest.raises(CheckpointError) as error:
        export_in_process(*CIFAR8, f"checkpoint.path={prefix}", f"export.root={tmp_path / 'exports'}",
                          "export.verify=false")
    assert str(error.value) == (f"checkpoint {prefix} holds non-finite weights in 1 variable: dense/kernel "
                                "(1 NaN, 1 Inf of 640) (a diverged training run? export an earlier step)")
    assert integer_versions(tmp_path / "exports" / "cifar_resnet") == []


# Issue 14: what a user's broken files give. Each is one line naming the file or key,
# never a traceback (exportkit/cli.py prints ExportkitError without one).

def test_binary_checkpoint_state_file_falls_back_to_the_newest_checkpoint(tmp_path):
    (tmp_path / "checkpoint").write_bytes(b"\x00\x92\xff\xfe" + bytes(range(256)))
    (tmp_path / "model.ckpt-5.index").write_bytes(b"")
    notices = []
    assert _locate(tmp_path, notices) == tmp_path / "model.ckpt-5"
    assert notices == [f"cannot read {tmp_path / 'checkpoint'} (not text: invalid UTF-8 at byte 1); "
                       "using the newest checkpoint in the folder, model.ckpt-5"]


def test_binary_checkpoint_state_file_with_nothing_to_fall_back_to(tmp_path):
    (tmp_path / "checkpoint").write_bytes(b"\x00\x92\xff\xfe")
    with pytest.raises(CheckpointError) as error:
        _locate(tmp_path)
    assert str(error.value) == (f"cannot read {tmp_path / 'checkpoint'} (not text: invalid UTF-8 at byte 1), "
                                f"and {tmp_path} holds no model.ckpt-N.index to fall back to")


def _small_archive(tmp_path):
    """A .tar.gz of an Estimator-like model_dir, its members compressible (so that a cut
    or a flipped byte lands in deflate data)."""
    model_dir = tmp_path / "small_model_dir"
    model_dir.mkdir()
    (model_dir / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-7"\n')
    (model_dir / "model.ckpt-7.index").write_bytes(b"index " * 2000)
    (model_dir / "model.ckpt-7.data-00000-of-00001").write_bytes(
        b"".join(b"weight %d " % (i % 977) for i in range(40000)))
    archive = tmp_path / "small_2026_01_01.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(model_dir, arcname="small_2026_01_01")
    return archive


def _unpack_error(archive, tmp_path):
    with pytest.raises(CheckpointError) as error:
        _locate(archive, cache_dir=tmp_path / "cache")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"cannot unpack {archive}: ") and message.endswith(" (a corrupt or truncated archive?)")
    assert [p for p in (tmp_path / "cache" / "extracted").iterdir()] == []  # no half-unpacked tree left
    return message


def test_gzip_header_then_garbage_is_one_line(tmp_path):
    archive = tmp_path / "garbage.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + b"\xff" * 64)
    assert "invalid block type" in _unpack_error(archive, tmp_path)


def test_truncated_archive_is_one_line(tmp_path):
    archive = _small_archive(tmp_path)
    raw = archive.read_bytes()
    archive.write_bytes(raw[: len(raw) // 2])
    assert _unpack_error(archive, tmp_path).endswith(
        ": Compressed file ended before the end-of-stream marker was reached (a corrupt or truncated archive?)")


def test_corrupted_archive_member_is_caught_by_the_gzip_checksum(tmp_path):
    # tarfile alone stops at the end-of-archive blocks and never reads gzip's CRC:
    # a flipped bit inside a member unpacked without a word.
    archive = _small_archive(tmp_path)
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    archive.write_bytes(bytes(raw))
    assert "CRC check failed" in _unpack_error(archive, tmp_path)


def test_bytes_after_the_gzip_stream_are_ignored_as_gzip_does(tmp_path):
    archive = _small_archive(tmp_path)
    archive.write_bytes(archive.read_bytes() + b"trailing bytes")
    assert _locate(archive, cache_dir=tmp_path / "cache").name == "model.ckpt-7"


@pytest.mark.parametrize("source", ["archive", "url"])
def test_cache_dir_under_a_regular_file_names_the_key(tmp_path, source):
    (tmp_path / "a_file").write_text("not a directory")
    cache = tmp_path / "a_file" / "cache"
    path, url, place = {
        "archive": (_small_archive(tmp_path), None, cache / "extracted"),
        # Refused before any connection: port 9 would refuse it anyway.
        "url": (None, "http://127.0.0.1:9/resnet50_2017_11_30.tar.gz", cache / "downloads"),
    }[source]
    with pytest.raises(CheckpointError) as error:
        _locate(path, url=url, cache_dir=cache)
    assert str(error.value) == (f"checkpoint.cache_dir={cache}: cannot write to {place} (Not a directory); "
                                "set checkpoint.cache_dir to a writable directory")


@pytest.mark.parametrize("source", ["archive", "url"])
def test_read_only_cache_dir_names_the_key(tmp_path, monkeypatch, source):
    import errno
    import os

    cache = tmp_path / "read_only_cache"
    (cache / "extracted").mkdir(parents=True)
    (cache / "downloads").mkdir()
    for directory in (cache / "extracted", cache / "downloads", cache):
        directory.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: fail as the kernel would for anyone else
        real_mkdir = os.mkdir

        def refuse(path, *args, real, **kwargs):
            if str(path).startswith(str(cache)):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", lambda path, *a, **k: refuse(path, *a, real=real_mkdir, **k))
        monkeypatch.setattr(checkpoint, "open", lambda path, *a, **k: refuse(path, *a, real=open, **k), raising=False)
    path, url, place = {
        "archive": (_small_archive(tmp_path), None, cache / "extracted"),
        "url": (None, "http://127.0.0.1:9/resnet50_2017_11_30.tar.gz", cache / "downloads"),
    }[source]
    try:
        with pytest.raises(CheckpointError) as error:
            _locate(path, url=url, cache_dir=cache)
    finally:
        for directory in (cache, cache / "extracted", cache / "downloads"):
            directory.chmod(0o755)
    assert str(error.value) == (f"checkpoint.cache_dir={cache}: cannot write to {place} (Permission denied); "
                                "set checkpoint.cache_dir to a writable directory")


def _small_checkpoint(directory, names):
    import numpy as np
    import tensorflow as tf

    tensors = [np.array(7, np.int64) if n == "global_step" else np.ones((64, 64), np.float32) for n in names]
    prefix = directory / "model.ckpt-7"
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors)
    data = directory / "model.ckpt-7.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:-100])  # cut short, as a copy that ran out of disk
    return prefix


def test_truncated_data_file_fails_read_in_one_line(tmp_path):
    # An Estimator's global_step sorts after its layers, so the cut lands in it: read()'s
    # first look at the data file. TF's reader raises IndexError there, not an OpError.
    prefix = _small_checkpoint(tmp_path, ["dense/kernel", "global_step"])
    with pytest.raises(CheckpointError) as error:
        checkpoint.read(prefix)
    assert str(error.value) == (f"cannot read checkpoint {prefix}: Read less bytes than requested "
                                "(a corrupt or truncated data file?)")


def test_truncated_data_file_fails_the_finite_check_in_one_line(tmp_path):
    prefix = _small_checkpoint(tmp_path, ["conv2d/kernel", "dense/kernel"])
    ckpt = checkpoint.read(prefix)  # the index alone: no global_step to read
    assert ckpt.global_step is None and set(ckpt.variables) == {"conv2d/kernel", "dense/kernel"}
    with pytest.raises(CheckpointError) as error:
        checkpoint.check_finite(ckpt, ["conv2d/kernel", "dense/kernel"])
    assert str(error.value) == (f"cannot restore from {prefix}: Read less bytes than requested "
                                "(a corrupt or truncated data file?)")


# Issue 16: the TF-slim model zoo's V1 single-file checkpoints (vgg_16.ckpt: one SSTable,
# no .index) and its tarballs, beside today's V2 layouts.

_SLIM_VARIABLES = {"vgg_16/conv1/conv1_1/weights": (3, 3, 3, 4), "vgg_16/conv1/conv1_1/biases": (4,),
                   "vgg_16/fc8/weights": (1, 1, 4, 10)}


def _write_v1(path, tensors):
    """A V1 single-file checkpoint of ``tensors`` (name -> array), as slim's zoo ships them."""
    import tensorflow as tf

    v1 = tf.compat.v1
    with tf.Graph().as_default():
        variables = {name: v1.Variable(value, name=name) for name, value in tensors.items()}
        saver = v1.train.Saver(var_list=variables, write_version=v1.train.SaverDef.V1)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            saver.save(sess, str(path), write_meta_graph=False, write_state=False)
    return path


def _slim_tensors(**extra):
    import numpy as np

    rng = np.random.default_rng(0)
    return {**{name: rng.standard_normal(shape).astype(np.float32) for name, shape in _SLIM_VARIABLES.items()},
            **extra}


def _zoo_tarball(archive, *files):
    """A tarball as the zoo packs one: the files at its top level, no directory."""
    with tarfile.open(archive, "w:gz") as tar:
        for f in files:
            tar.add(f, arcname=f.name)
    return archive


def test_v1_single_file_is_located_read_and_checked(tmp_path):
    import numpy as np

    ckpt_file = _write_v1(tmp_path / "vgg_16.ckpt", _slim_tensors(global_step=np.int64(42)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vgg_16.ckpt"]  # V1: no .index, no state file
    assert _locate(ckpt_file) == ckpt_file
    assert _locate(tmp_path) == ckpt_file  # a directory holding exactly one
    ckpt = checkpoint.read(ckpt_file)
    assert ckpt.prefix == str(ckpt_file) and ckpt.global_step == 42
    assert ckpt.variables == {**_SLIM_VARIABLES, "global_step": ()}
    checkpoint.check_finite(ckpt, list(_SLIM_VARIABLES))


def test_v1_non_finite_weights_name_the_file(tmp_path):
    import numpy as np

    tensors = _slim_tensors()
    tensors["vgg_16/fc8/weights"].flat[0] = np.nan
    ckpt_file = _write_v1(tmp_path / "vgg_16.ckpt", tensors)
    with pytest.raises(CheckpointError) as err:
        checkpoint.check_finite(checkpoint.read(ckpt_file), list(_SLIM_VARIABLES))
    assert str(err.value).startswith(f"checkpoint {ckpt_file} holds non-finite weights in 1 variable: "
                                     "vgg_16/fc8/weights (1 NaN, 0 Inf of 40)")


def test_v1_zoo_tarball_is_unpacked_and_its_ckpt_found(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    ckpt_file = _write_v1(source / "vgg_16.ckpt", _slim_tensors())
    (source / "eval.graph").write_bytes(b"\x0a\x05graph" * 20)  # newer zoo tarballs carry one beside it
    archive = _zoo_tarball(tmp_path / "vgg_16_2016_08_28.tar.gz", ckpt_file, source / "eval.graph")
    notices = []
    found = _locate(archive, notices, cache_dir=tmp_path / "cache")
    assert found.name == "vgg_16.ckpt" and found.parent.parent == tmp_path / "cache" / "extracted"
    assert any("unpacking" in n for n in notices)
    assert checkpoint.read(found).variables == _SLIM_VARIABLES
    assert _locate(archive, cache_dir=tmp_path / "cache") == found  # the cache is reused


def test_v1_state_file_naming_the_file_is_followed(tmp_path):
    _write_v1(tmp_path / "a.ckpt", _slim_tensors())
    chosen = _write_v1(tmp_path / "b.ckpt", _slim_tensors())
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "b.ckpt"\n')
    assert _locate(tmp_path) == chosen


def test_directory_with_several_v1_files_names_them(tmp_path):
    for name in ("vgg_16.ckpt", "vgg_19.ckpt"):
        _write_v1(tmp_path / name, _slim_tensors())
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError) as err:
        _locate(tmp_path)
    assert str(err.value) == (f"{tmp_path} holds 2 single-file (V1) checkpoints: vgg_16.ckpt, vgg_19.ckpt; "
                              "pass checkpoint.path=<one of these files>")


def test_a_single_ckpt_is_preferred_to_other_v1_files(tmp_path):
    chosen = _write_v1(tmp_path / "vgg_16.ckpt", _slim_tensors())
    _write_v1(tmp_path / "vgg_16.backup", _slim_tensors())
    assert _locate(tmp_path) == chosen


def test_tarball_without_a_checkpoint_says_so(tmp_path):
    (tmp_path / "eval.graph").write_bytes(b"\x0a\x05graph" * 20)
    (tmp_path / "labels.txt").write_text("cat\n")
    archive = _zoo_tarball(tmp_path / "resnet_v2_50_2017_04_14.tar.gz", tmp_path / "eval.graph", tmp_path / "labels.txt")
    with pytest.raises(CheckpointError) as err:
        _locate(archive, cache_dir=tmp_path / "cache")
    assert str(err.value) == (f"{archive} holds no checkpoint (no *.index file and no single-file (V1) "
                              "checkpoint inside)")


@pytest.mark.parametrize("content", [b"", b"\x00" * 47, bytes(range(256)) * 8], ids=["empty", "short", "binary"])
def test_a_file_that_is_no_checkpoint_is_one_line(tmp_path, content):
    junk = tmp_path / "inception_v3.ckpt"
    junk.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        _locate(junk)
    assert str(err.value) == (f"checkpoint.path={junk}: not a checkpoint: neither a .tar.gz nor a single-file (V1) "
                              "checkpoint (no SSTable footer), and no inception_v3.ckpt.index beside it")


def test_a_v1_file_cut_short_fails_read_in_one_line(tmp_path):
    ckpt_file = _write_v1(tmp_path / "vgg_16.ckpt", _slim_tensors())
    data = ckpt_file.read_bytes()
    ckpt_file.write_bytes(data[:100] + data[-48:])  # the footer kept, the blocks it points at gone
    assert _locate(ckpt_file) == ckpt_file
    with pytest.raises(CheckpointError) as err:
        checkpoint.read(ckpt_file)
    message = str(err.value)
    assert message.startswith(f"cannot read checkpoint {ckpt_file}: ") and "\n" not in message


def test_v1_zoo_tarball_exports_end_to_end(cifar8_model_dir, tmp_path):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(cifar8_model_dir))
    tensors = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    source = tmp_path / "src"
    source.mkdir()
    ckpt_file = _write_v1(source / "cifar8.ckpt", tensors)
    archive = _zoo_tarball(tmp_path / "resnet_v1_50_2016_08_28.tar.gz", ckpt_file)
    with tarfile.open(archive) as tar:
        assert tar.getnames() == ["cifar8.ckpt"]
    result, output = export_in_process(*CIFAR8, f"checkpoint.path={archive}",
                                       f"export.root={tmp_path / 'exports'}", "serving.warmup.enabled=false",
                                       f"checkpoint.cache_dir={tmp_path / 'cache'}")
    assert result["checkpoint"].endswith("/cifar8.ckpt")
    assert result["checkpoint"].startswith(str(tmp_path / "cache" / "extracted"))
    assert result["global_step"] == 1234
    assert result["verification"]["passed"] is True
