"""The name and job id checks every message's ids go through: what they accept, what they refuse and say, and
that the one-regex fast path decides exactly as the checks that explain a refusal."""

from __future__ import annotations

import random
import string

import pytest

from fluster.protocol.ids import MAX_JOB_DEPTH, MAX_NAME, validate_job_id, validate_name, validate_token


class Slow(str):
    """A str the fast path does not take (it takes only exact ``str``): what the explaining checks decide."""


@pytest.mark.parametrize("name", ["a", "job-1", "A_b-9", "x" * MAX_NAME])
def test_names_that_can_be_subject_tokens_are_accepted(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("", "non-empty"),
        ("x" * (MAX_NAME + 1), "the limit is 128"),
        ("a/b", "cannot contain '/'"),
        ("a.b", "letters, digits"),
        ("a b", "letters, digits"),
        ("a*", "letters, digits"),
        ("a>", "letters, digits"),
        ("abc\n", "letters, digits"),
        ("é", "letters, digits"),
    ],
)
def test_names_that_cannot_are_refused_with_what_is_wrong(name: str, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        validate_name(name)


def test_job_ids_nest_within_their_depth_and_length() -> None:
    deep = "/".join(["a"] * MAX_JOB_DEPTH)
    assert validate_job_id(deep) == deep
    with pytest.raises(ValueError, match="levels deep"):
        validate_job_id(deep + "/a")
    with pytest.raises(ValueError, match="characters long"):
        validate_job_id("/".join(["x" * 100] * 6))  # 605 > MAX_JOB_ID
    with pytest.raises(ValueError, match="job id component"):
        validate_job_id("a//b")
    with pytest.raises(ValueError, match="non-empty"):
        validate_job_id("")


def test_the_fast_path_decides_as_the_explaining_checks_do() -> None:
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "_-/. *>\n"
    checked = 0
    for _ in range(20_000):
        if rng.random() < 0.5:
            text = "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 3, 20, 40])))
        else:
            sizes = [rng.choice([0, 1, 3, 64, 65, 127, 128, 129]) for _ in range(rng.randint(1, MAX_JOB_DEPTH + 2))]
            text = "/".join("".join(rng.choice("ab_-9") for _ in range(n)) for n in sizes)
        for check in (validate_name, validate_token, validate_job_id):
            fast = _accepts(check, text)
            assert fast == _accepts(check, Slow(text)), (check.__name__, text)
            checked += fast
    assert checked > 1_000  # both outcomes were exercised


def _accepts(check: object, text: str) -> bool:
    try:
        check(text)  # type: ignore[operator]
    except ValueError:
        return False
    return True
