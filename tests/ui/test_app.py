"""lmforge.ui.app: safe by default (loopback, a login off loopback), and the page builds with every tab."""

from __future__ import annotations

import pytest

from lmforge.errors import UserInputError
from lmforge.ui.app import TABS, build_app, check_exposure, parse_auth


def test_auth_is_user_colon_password():
    assert parse_auth("admin:s3:cret") == ("admin", "s3:cret")
    assert parse_auth(None) is None
    for bad in ("admin", ":pw", "admin:"):
        with pytest.raises(UserInputError, match="USER:PASS"):
            parse_auth(bad)


def test_only_loopback_may_go_without_a_login():
    for host in ("127.0.0.1", "localhost", "::1"):
        check_exposure(host, None)
    with pytest.raises(UserInputError, match="--host 0.0.0.0 makes the UI reachable from other machines"):
        check_exposure("0.0.0.0", None)
    check_exposure("0.0.0.0", ("admin", "pw"))


def test_the_page_has_every_tab(workspace):
    app = build_app(workspace)
    config = app.get_config_file()
    ids = {component.get("props", {}).get("elem_id") for component in config["components"]}
    assert {f"tab-{name}" for name in TABS} <= ids
    assert {
        "plan-verdict",
        "data-preview",
        "train-curves",
        "runs-table",
        "eval-summary",
        "chat-history",
        "files-verdict",
    } <= ids
