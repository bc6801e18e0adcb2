"""Composition, validation before TensorFlow, and data_format spellings."""

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from exportkit.config import ConfigError, DataFormat, resolve_data_format, to_plain, validate
from tests.conftest import compose_config


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
        ("preprocessing.crop=random", "preprocessing.crop", "expected one of [central, crop_or_pad]"),
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
    (["preprocessing.max_pixels=60000"], "preprocessing.max_pixels=60000 is below one 256x256 image "
                                         r"\(preprocessing.resize_side: the resized image is held to the same limit\)"),
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
        "import sys, run_export;"
        "from tests.conftest import compose_config;"
        "compose_config('model.size=18');"
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(__import__('tests.conftest').conftest.REPO))
    assert out.stdout.strip() == "False"
