"""gptbook.deploy.privacy: personal data masked, ordinary numbers left alone."""
import pytest

from gptbook.deploy.privacy import cn_id_valid, luhn_valid, mask_pii

# a syntactically valid resident ID (check digit computed, not a real person's): 11010519491231002X
VALID_ID = "11010519491231002X"


@pytest.mark.parametrize("text, expected", [
    ("write to zhang.san+shop@example.com.cn today", "write to [EMAIL] today"),
    ("我的手机号是13812345678，请回电", "我的手机号是[PHONE]，请回电"),
    ("call +86 138 1234 5678 or 010-62751234", "call [PHONE] or [PHONE]"),
    ("office: +44 20 7946 0958", "office: [PHONE]"),
    ("US line (555) 123-4567", "US line [PHONE]"),
    (f"身份证号：{VALID_ID}。", "身份证号：[ID]。"),
    ("card 4111 1111 1111 1111 expires", "card [CARD] expires"),
])
def test_personal_data_is_masked(text, expected):
    assert mask_pii(text) == expected


@pytest.mark.parametrize("text", [
    "order 20231105 shipped on 2023-11-05 at 14:30",
    "ID 110105194912310021 has a wrong check digit",         # not a valid ID: left alone
    "4111 1111 1111 1112 fails the Luhn check",
    "GPT-3 has 175000000000 parameters and 96 layers",
    "the temperature was 0.7 and top_k 40",
])
def test_ordinary_text_and_numbers_are_left_alone(text):
    assert mask_pii(text) == text


def test_check_digits():
    assert cn_id_valid(VALID_ID) and not cn_id_valid("110105194912310021")
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
