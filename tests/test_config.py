"""Composition, validation before TensorFlow, and data_format spellings."""

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from exportkit.config import ConfigError, DataFormat, resolve_data_format, to_plain, validate
from tests.helpers import REPO, compose_config


def test_defaults_pick_resnet50_with_the_training_preprocessing():
    cfg = compose_config()
    plain = to_plain(cfg)
    assert plain["model"]["name"] == "resnet" and plain["model"]["size"] == 50
    assert plain["preprocessing"]["name"] == "vgg"
    assert plain["preprocessing"]["normalization"]["mean"] == [123.68, 116.78, 103.94]
    assert plain["head"] == {"name": "top_k", "k": 5, "probabilities": "full", "class_names": False}
    assert plain["signature"]["name"] == "predict_images"
    assert plain["export"]["root"] == "exports" and plain["export"]["model_name"] == "resnet"
    assert plain["checkpoint"]["url"].endswith("resnet50_2017_11_30.tar.gz")


def test_preprocessing_override_beats_the_model_default():
    plain = to_plain(compose_config("model=resnet", "preprocessing=notebook"))
    assert plain["preprocessing"]["name"] == "notebook"
    assert plain["preprocessing"]["normalization"] == {"divisor": 255.0, "mean": [0.5] * 3, "std": [1.0] * 3}


def test_checkpoint_path_interpolates_the_size():
    cfg = compose_config("model.size=18", "checkpoint.path=/ckpt/resnet${model.size}")
    assert to_plain(cfg)["checkpoint"]["path"] == "/ckpt/resnet18"


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("model.size=51", "model.size", "expected one of [18, 34, 50, 101, 152, 200]"),
        ("model.data_format=NCWH", "model.data_format", "expected one of [auto, channels_first, channels_last, NCHW, NHWC]"),
        ("serving.device=tpu", "serving.device", "expected one of [cpu, gpu]"),
        ("head.probabilities=softmax", "head.probabilities", "expected one of [full, top_k]"),
        ("preprocessing.crop=random", "preprocessing.crop", "expected one of [central, crop_or_pad, fraction]"),
    ],
)
def test_bad_enum_values_fail_at_compose_naming_the_key(override, key, expected):
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(override)
    cause = err.value.__cause__
    assert isinstance(cause, ValidationError)
    assert expected in str(cause) and f"full_key: {key}" in str(cause)


@pytest.mark.parametrize("override, message", [
    ("+head.kk=3", "unknown config key head.kk: nothing reads it; did you mean head.k?"),
    ("+expor.verify=false", "unknown config key expor: nothing reads it; did you mean export?"),
    ("+serving.warmup.sizes=[1]", "unknown config key serving.warmup.sizes: nothing reads it; did you mean serving.warmup.batch_sizes?"),
    ("+model.depth=50", "unknown config key model.depth: nothing reads it"),
])
def test_keys_added_with_plus_that_nothing_reads_fail_validation(override, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_config(override))
    assert str(error.value) == message


def test_every_shipped_config_declares_only_schema_keys():
    for overrides in ([], ["model=cifar_resnet"], ["preprocessing=notebook"], ["serving.batching.enabled=true"]):
        validate(compose_config(*overrides))


def test_unknown_key_fails_at_compose():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config("head.kk=3")
    assert "Could not override 'head.kk'" in str(err.value)


@pytest.mark.parametrize("k", [0, 1002])
def test_k_outside_the_classes_fails_validation(k):
    with pytest.raises(ConfigError, match=rf"head.k={k} must be between 1 and model.num_classes=1001"):
        validate(compose_config(f"head.k={k}"))


def test_resize_side_below_image_size_fails_validation():
    with pytest.raises(ConfigError, match="preprocessing.resize_side=200"):
        validate(compose_config("preprocessing.resize_side=200"))


@pytest.mark.parametrize("overrides, message", [
    (["preprocessing=notebook", "preprocessing.max_pixels=40000"],
     "preprocessing.max_pixels=40000 is below one 224x224 image$"),
    (["preprocessing.max_pixels=200000"], r"preprocessing.max_pixels=200000 leaves a resize budget of 50,000 pixels "
                                          r"\(max_pixels / 4\), below one 256x256 image \(preprocessing.resize_side\)"),
])
def test_max_pixels_must_cover_the_crop_and_the_resize(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_config(*overrides))  # vgg: resize_side 256, image_size 224; notebook: no resize
    # No resize: 224x224 is enough (and a warmup request of one 224x224 image).
    validate(compose_config("preprocessing=notebook", "preprocessing.max_pixels=60000", "serving.warmup.batch_sizes=[1]"))


@pytest.mark.parametrize(
    "given, device, expected",
    [
        ("auto", "cpu", ("channels_last", "auto, from serving.device=cpu")),
        ("auto", "gpu", ("channels_first", "auto, from serving.device=gpu")),
        ("NCHW", "cpu", ("channels_first", "given")),
        ("NHWC", "gpu", ("channels_last", "given")),
        ("channels_first", "cpu", ("channels_first", "given")),
        ("channels_last", "gpu", ("channels_last", "given")),
    ],
)
def test_data_format_resolves_from_the_serving_device_never_the_machine(given, device, expected):
    cfg = compose_config(f"model.data_format={given}", f"serving.device={device}")
    plain = to_plain(cfg)
    assert resolve_data_format(plain["model"]["data_format"], plain["serving"]["device"]) == expected


def test_data_format_aliases_are_one_member_each():
    assert DataFormat["NCHW"] is DataFormat.channels_first
    assert DataFormat["NHWC"] is DataFormat.channels_last
    assert to_plain(compose_config("model.data_format=NCHW"))["model"]["data_format"] == "channels_first"


def test_config_modules_do_not_import_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys, exportkit.app;"
        "import tests.conftest;"  # loads the plugins and registers the schemas, as the app does
        "from tests.helpers import compose_config;"
        "compose_config('model.size=18');"
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(REPO))
    assert out.stdout.strip() == "False"


# Issue 14: values that composed and then failed later (a traceback, or a file TF
# Serving cannot use) are refused by validate, before TensorFlow loads, naming the key.

@pytest.mark.parametrize("override, message", [
    ("preprocessing.max_pixels=99999999999999999999",
     "preprocessing.max_pixels=99999999999999999999 is over 9223372036854775807, the largest int64: "
     "the serving graph compares pixel counts as tf.int64"),
    ("preprocessing.max_pixels=-99999999999999999999",
     "preprocessing.max_pixels=-99999999999999999999 is below -9223372036854775808, the smallest int64: "
     "the serving graph compares pixel counts as tf.int64"),
    ("model.num_classes=99999999999999999999",
     "model.num_classes=99999999999999999999 is over 9223372036854775807, the largest int64: "
     "TensorFlow takes no larger integer"),
])
def test_integers_beyond_int64_fail_validation(override, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_config(override))
    assert str(error.value) == message


SCHEDULER = "the largest int32: TF Serving's batch scheduler holds it in a C++ int"


@pytest.mark.parametrize("override, message", [
    ("serving.batching.max_batch_size=100000000000000000000",
     f"serving.batching.max_batch_size=100000000000000000000 is over 2147483647, {SCHEDULER}"),
    # Within int64, so the file parses, but TF Serving's int would wrap it to 32.
    ("serving.batching.max_batch_size=4294967328",
     f"serving.batching.max_batch_size=4294967328 is over 2147483647, {SCHEDULER}"),
    ("serving.batching.allowed_batch_sizes=[1,4294967296]",
     f"serving.batching.allowed_batch_sizes=[1, 4294967296]: 4294967296 is over 2147483647, {SCHEDULER}"),
    ("serving.batching.num_batch_threads=2147483648",
     f"serving.batching.num_batch_threads=2147483648 is over 2147483647, {SCHEDULER}"),
    ("serving.batching.max_enqueued_batches=2147483648",
     f"serving.batching.max_enqueued_batches=2147483648 is over 2147483647, {SCHEDULER}"),
    ("serving.batching.batch_timeout_micros=9223372036854775808",
     "serving.batching.batch_timeout_micros=9223372036854775808 is over 9223372036854775807, the largest int64: "
     "TF Serving reads it as an int64"),
])
def test_batching_values_tf_serving_cannot_hold_fail_validation(override, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_config("serving.batching.enabled=true", override))
    assert str(error.value) == message


def test_batching_bounds_leave_large_sane_values_alone():
    validate(compose_config("serving.batching.enabled=true", "serving.batching.batch_timeout_micros=9223372036854775807",
                            "serving.batching.max_batch_size=2147483647", "serving.batching.allowed_batch_sizes=[]",
                            "serving.warmup.batch_sizes=[1]"))


@pytest.mark.parametrize("override, message", [
    ("export.root=", "export.root='' is empty: name the serving root directory (export.root=. for the current one)"),
    ("export.root='  '", "export.root='  ' is blank: name the serving root directory (export.root=. for the current one)"),
    ("checkpoint.cache_dir=", "checkpoint.cache_dir='' is empty: name a directory (checkpoint.cache_dir=. for the current one)"),
    ("checkpoint.path=", "checkpoint.path='' is empty: pass a model_dir, checkpoint prefix or .tar.gz, "
                         "or null to use checkpoint.url"),
    ("signature.name=", "signature.name='' is empty: it is the signature name clients call (the default is predict_images)"),
    ("signature.name=' '", "signature.name=' ' is blank: it is the signature name clients call (the default is predict_images)"),
    ("signature.name='predict '", "signature.name='predict ' has spaces around it: clients would have to send them too"),
    ("export.model_name=", "export.model_name='' is empty: it is the name TF Serving serves the model under, "
                           "and its directory in export.root"),
])
def test_empty_names_and_paths_fail_validation(override, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_config(override))
    assert str(error.value) == message


@pytest.mark.parametrize("name", [".", "..", ".hidden", "a/b", "/abs", "two words", "42"])
def test_model_names_that_are_no_directory_of_their_own_fail_validation(name):
    with pytest.raises(ConfigError) as error:
        validate(compose_config(f"export.model_name='{name}'"))
    assert str(error.value) == (
        f"export.model_name={name!r}: use letters, digits, '_', '.' or '-', starting with a letter or digit "
        "(it names a directory, and an all-digit name would look like a version)")


@pytest.mark.parametrize("override, message", [
    ("preprocessing=base_preprocessing", "preprocessing.name is not set (a base_* schema selected instead of an option?): "
                                         "choose preprocessing=<option>, or set preprocessing.name"),
    ("model=base_resnet", "preprocessing is not chosen (a base_* schema selected instead of an option?): "
                          "choose preprocessing=<option>"),
])
def test_a_bare_schema_composed_through_the_api_fails_validation(override, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_config(override))
    assert str(error.value) == message


def _choice_error(*args):
    from exportkit.config import group_choice_error
    from tests.helpers import CONF

    return group_choice_error(list(args), str(CONF))


@pytest.mark.parametrize("args, message", [
    (["model=resnt"], "model=resnt is not a model option; did you mean model=resnet? (options: cifar_resnet, resnet)"),
    (["preprocessing=vgg16", "model.size=18"],
     "preprocessing=vgg16 is not a preprocessing option; did you mean preprocessing=vgg? (options: cifar, inception, notebook, vgg)"),
    (["-m", "preprocessing=vgg,notebok"],
     "preprocessing=notebok is not a preprocessing option; did you mean preprocessing=notebook? "
     "(options: cifar, inception, notebook, vgg)"),
    (["preprocessing=fancy"], "preprocessing=fancy is not a preprocessing option (options: cifar, inception, notebook, vgg)"),
    (["hydra/launcher=paralel"], "hydra/launcher=paralel is not a hydra/launcher option; did you mean "
                                 "hydra/launcher=parallel? (options: basic, joblib, parallel, ray_cluster, slurm, "
                                 "submitit_local, submitit_slurm)"),
    (["preprocessing=base_preprocessing"],
     "preprocessing=base_preprocessing is the schema the preprocessing options extend, not an option "
     "(options: cifar, inception, notebook, vgg)"),
    (["model=base_resnet"], "model=base_resnet is the schema the model options extend, not an option "
                            "(options: cifar_resnet, resnet)"),
    (["head=base_head"], "head=base_head is the schema the head options extend, not an option (options: top_k)"),
    (["signature=base_signature"],
     "signature=base_signature is the schema the signature options extend, not an option (options: ai_platform, default, model_garden, tf_serving_example)"),
])
def test_a_group_option_that_is_none_names_the_option_meant(args, message):
    """The option lists hold at least the built-ins: an installed plugin may add its own."""
    got = _choice_error(*args)
    head, _, options = message.rpartition(" (options: ")
    got_head, _, got_options = got.rpartition(" (options: ")
    assert got_head == head
    assert set(options.rstrip(")").split(", ")) <= set(got_options.rstrip(")").split(", "))


@pytest.mark.parametrize("args", [
    [], ["model=cifar_resnet", "preprocessing=notebook"], ["-m", "preprocessing=vgg,notebook", "head.k=1,5"],
    ["model.size=18", "checkpoint.path=/x"], ["~model"], ["+head.kk=3"], ["--help"], ["--cfg", "job"],
    ["hydra/launcher=parallel"], ["preprocessing=glob(*)"],
    # Other config dirs or search paths: Hydra decides.
    ["--config-dir", "/elsewhere", "model=mine"], ["hydra.searchpath=[pkg://mine.conf]", "model=mine"],
])
def test_choices_that_exist_or_are_not_checked_pass(args):
    assert _choice_error(*args) is None


def test_run_export_suggests_the_option_meant(tmp_path):
    from tests.helpers import run_cli

    run = run_cli("model=resnt", cwd=tmp_path, timeout=120)
    assert run.returncode == 1
    error, published = run.stdout.splitlines()
    assert error.startswith("error: model=resnt is not a model option; did you mean model=resnet? (options: ")
    assert {"cifar_resnet", "resnet"} <= set(error.rpartition("(options: ")[2].rstrip(")").split(", "))
    assert published == "no version was published"
    assert "Traceback" not in run.stderr and not (tmp_path / "outputs").exists()


def test_help_lists_the_options_without_the_schemas():
    from hydra import initialize_config_dir

    from exportkit.config import _config_groups_help
    from tests.helpers import CONF

    assert _config_groups_help() == "$APP_CONFIG_GROUPS"  # Hydra not running: its own list
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        listed = dict(line.split(": ", 1) for line in _config_groups_help().splitlines())
    assert set(listed) == {"head", "model", "preprocessing", "signature"}
    for group, options in listed.items():
        options = options.split(", ")
        assert not any(option.startswith("base_") for option in options)
        # Every option of this checkout; an installed plugin may add its own.
        assert {p.stem for p in (CONF / group).glob("*.yaml")} <= set(options), group
