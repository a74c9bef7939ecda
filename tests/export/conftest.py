import pytest


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    from helpers.exported import exported_tiny_bundle

    return exported_tiny_bundle(tmp_path_factory.getbasetemp())
