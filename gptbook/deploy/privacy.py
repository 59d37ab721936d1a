"""Personal data masked before a prompt is logged or stored (document 000/003 FAQ Q5: 数据脱敏).

`mask_pii(text)` replaces e-mail addresses, phone numbers (Chinese mobile and landline, international
+CC numbers, North-American style) and ID numbers (the 18-character Chinese resident ID with its
check digit verified; bank-card numbers that pass the Luhn check) by typed placeholders such as
`[EMAIL]`. Regular expressions, not a model: they miss what they do not describe (names, addresses),
which is why the service logs no prompt unless asked (`serve --request-log FILE`) and masks what it
logs.
"""
from __future__ import annotations

import re

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# 18-character resident ID: 6-digit region, birth date YYYYMMDD, 3-digit sequence, check digit or X
_CN_ID = re.compile(r"(?<![0-9A-Za-z])\d{6}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]"
                    r"(?![0-9A-Za-z])")
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_PHONES = [
    re.compile(r"(?<!\d)(?:\+?86[ -]?)?1[3-9]\d[ -]?\d{4}[ -]?\d{4}(?!\d)"),         # Chinese mobile
    re.compile(r"(?<!\d)0\d{2,3}-?\d{7,8}(?!\d)"),                                 # Chinese landline
    re.compile(r"\+\d{1,3}[ -]?(?:\(?\d{1,4}\)?[ -]?){2,4}\d{2,4}(?!\d)"),           # international
    re.compile(r"(?<!\d)\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?!\d)"),                    # 555-123-4567
]


def cn_id_valid(s: str) -> bool:
    """The ISO 7064 MOD 11-2 check digit of a Chinese resident ID (GB 11643-1999)."""
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    total = sum(int(d) * w for d, w in zip(s[:17], weights))
    return "10X98765432"[total % 11] == s[17].upper()


def luhn_valid(digits: str) -> bool:
    """The Luhn check that payment-card numbers pass (and most random digit strings do not)."""
    nums = [int(d) for d in digits][::-1]
    return sum(d if i % 2 == 0 else (2 * d - 9 if d > 4 else 2 * d) for i, d in enumerate(nums)) % 10 == 0


def mask_pii(text: str) -> str:
    """text with e-mail addresses, ID numbers, card numbers and phone numbers replaced by [EMAIL],
    [ID], [CARD], [PHONE]. IDs and cards are masked only when their check digit is right, so an
    order number or a date is left alone."""
    text = _EMAIL.sub("[EMAIL]", text)
    text = _CN_ID.sub(lambda m: "[ID]" if cn_id_valid(m.group(0)) else m.group(0), text)

    for pattern in _PHONES:             # before cards: a +86 number can pass the Luhn check by chance
        text = pattern.sub("[PHONE]", text)

    def card(m):
        digits = re.sub(r"\D", "", m.group(0))
        return "[CARD]" if 13 <= len(digits) <= 19 and luhn_valid(digits) else m.group(0)
    return _CARD.sub(card, text)
