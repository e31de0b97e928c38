"""Messages for people are one line of bounded length, whatever text they quote."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kurable.engine.messages import counted, one_line

HTML = """<!DOCTYPE HTML>
<html lang="en">
    <head>
        <title>Error response</title>
    </head>
    <body>
        <h1>Error response</h1>
        <p>Error code: 501</p>
    </body>
</html>
"""


def test_an_html_error_page_becomes_one_line() -> None:
    assert one_line(f"answered 501: {HTML}") == (
        'answered 501: <!DOCTYPE HTML> <html lang="en"> <head> <title>Error response</title>'
        " </head> <body> <h1>Error response</h1> <p>Error code: 501</p> </body> </html>"
    )


def test_a_long_message_is_cut_with_an_ellipsis() -> None:
    text = one_line("x" * 5000, limit=100)
    assert len(text) == 100
    assert text.endswith("…")
    assert one_line("short", limit=100) == "short"


@given(st.text(), st.integers(min_value=1, max_value=300))
def test_every_message_is_one_bounded_line(text: str, limit: int) -> None:
    line = one_line(text, limit)
    assert len(line) <= limit
    assert not any(c in line for c in "\n\r\t\v\f\x1c\x1d\x1e\x85\u2028\u2029")
    assert line == line.strip()


def test_counted_nouns_are_plural_unless_one() -> None:
    assert counted(1, "step") == "1 step"
    assert counted(0, "step") == "0 steps"
    assert counted(3, "key") == "3 keys"
