"""The fixture both test_deploy*.py use: PyYAML, or the test skips (it is in gmpsim's [test] extra)."""
from __future__ import annotations

import pytest

from tests.deploy.deploy_files import _need


@pytest.fixture(scope="module")
def yaml():
    _need("yaml", "PyYAML (installed with kubernetes-validate)")
    import yaml as mod
    return mod
