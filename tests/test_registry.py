from importlib.metadata import entry_points

import pytest

from exportkit.plugin import ENTRY_POINT_GROUP, builtin_plugins, ModelPlugin, load_plugins
from exportkit.registry import HEADS, MODELS, PREPROCESSORS, Registry, RegistryError


def test_registries_hold_exactly_the_built_ins_and_the_installed_plugins():
    import exportkit.estimator  # noqa: F401  (imports the built-in preprocessing and heads)

    assert {"exportkit.models.resnet", "exportkit.models.cifar_resnet"} <= set(builtin_plugins())
    installed = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}  # named as the model they register
    assert MODELS.names() == sorted({"resnet", "cifar_resnet", "slim"} | installed)
    # An installed plugin may register its own pipeline or head beside the built-ins.
    pipelines, heads = {"per_image_standardization", "standard"}, {"top_k"}
    if installed:
        assert pipelines <= set(PREPROCESSORS.names()) and heads <= set(HEADS.names())
    else:
        assert PREPROCESSORS.names() == sorted(pipelines) and HEADS.names() == sorted(heads)
    for name in MODELS.names():
        plugin = MODELS.get(name)
        assert isinstance(plugin, ModelPlugin) and plugin.name == name


def test_duplicate_name_raises_and_keeps_the_first():
    registry = Registry("widget")
    registry.register("a", obj=len)
    with pytest.raises(RegistryError, match="widget 'a' is already registered"):
        registry.register("a", obj=max)
    assert registry.get("a") is len


def test_lookup_error_names_what_is_registered_and_the_likely_cause():
    with pytest.raises(RegistryError) as err:
        MODELS.get("vit")
    message = str(err.value)
    assert "no model plugin named 'vit'" in message
    assert f"registered: {', '.join(MODELS.names())}" in message  # the built-ins and any installed plugin
    assert {"cifar_resnet", "resnet"} <= set(MODELS.names())
    assert "entry point" in message


def test_decorator_registers_under_the_function_name():
    registry = Registry("thing")

    @registry.register()
    def shiny():
        return 1

    assert "shiny" in registry and registry.get("shiny") is shiny and len(registry) == 1


def test_load_plugins_is_idempotent():
    before = MODELS.names()
    assert "exportkit.models.resnet" in load_plugins(["exportkit.models.resnet"])
    assert MODELS.names() == before
