import il2pkpd


def test_every_public_name_resolves():
    for name in il2pkpd.__all__:
        assert getattr(il2pkpd, name) is not None, name


def test_unknown_attribute_raises():
    import pytest

    with pytest.raises(AttributeError):
        il2pkpd.no_such_thing  # noqa: B018
