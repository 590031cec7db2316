"""The smoke runs the workflow tests read, each built once per session (about a minute each on
2 cores): ``(config, config file, results folder)``."""

import pytest
import yaml

from tests.workflow.helpers import REPO, run_config

HAVE_CORPORA = (REPO / "data" / "debian" / ".complete").is_file()


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    return run_config("smoke", tmp_path_factory.mktemp("smoke"))


@pytest.fixture(scope="session")
def text_smoke(tmp_path_factory):
    if not HAVE_CORPORA:
        pytest.skip("run scripts/install.sh to fetch the corpora")
    dataset = yaml.safe_load((REPO / "config" / "text_smoke.yaml").read_text())["dataset"]
    dataset = {**dataset, "root": str(REPO / dataset["root"])}
    return run_config("text_smoke", tmp_path_factory.mktemp("text_smoke"), dataset=dataset)


@pytest.fixture(scope="session")
def translation_smoke(tmp_path_factory):
    if not HAVE_CORPORA:
        pytest.skip("run scripts/install.sh to fetch the corpora")
    dataset = yaml.safe_load((REPO / "config" / "translation_smoke.yaml").read_text())["dataset"]
    dataset = {**dataset, "root": str(REPO / dataset["root"])}
    return run_config("translation_smoke", tmp_path_factory.mktemp("tr_smoke"), dataset=dataset)
