from __future__ import annotations

import esgz


def test_all_is_exactly_the_public_api() -> None:
    assert sorted(esgz.__all__) == sorted(["EsgzError", "__version__"])
    for name in esgz.__all__:
        assert hasattr(esgz, name)
