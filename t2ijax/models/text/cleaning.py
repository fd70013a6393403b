"""Caption cleaning before tokenizing (`config.text_encoder.clean`).

  none       the caption as written
  basic      mojibake fixed, HTML entities unescaped, whitespace collapsed, ends stripped
  deepfloyd  PRX's version of DeepFloyd IF's web-caption cleaning (diffusers'
             `PRXPipeline` `TextPreprocessor.clean_text`): lower case; URLs, @handles, CJK
             characters, IP addresses, file names, long numbers, product ids and shop spam
             removed; dashes and odd punctuation unified or dropped
`tests/test_text_cleaning.py` checks `deepfloyd` and `basic` against diffusers' output.
"""
import html
import re
import urllib.parse

import ftfy

from t2ijax.registry import Registry

CLEANERS = Registry("text_encoder.clean")

_DASHES = ("\u002d\u058a\u05be\u1400\u1806\u2010-\u2015\u2e17\u2e1a\u2e3a\u2e3b\u2e40\u301c\u3030\u30a0"
           "\ufe31\ufe32\ufe58\ufe63\uff0d")
_CJK = "\u31c0-\u9fff"  # CJK strokes and kana extensions through the unified ideographs
_MEDIA = "png|jpg|jpeg|bmp|webp|eps|pdf|apk|mp4"
_DOMAINS = "com|co|ru|net|org|edu|gov|it"


def _rules(*pairs: tuple[str, str]) -> list[tuple[re.Pattern, str]]:
    return [(re.compile(pattern), replacement) for pattern, replacement in pairs]


# Applied in order; each rule sees the previous one's output.
_BEFORE_FIX = _rules(
    ("<person>", "person"),
    (rf"\b((?:https?|www):(?:/{{1,3}}|[a-zA-Z0-9%])|[a-zA-Z0-9.\-]+[.](?:{_DOMAINS})[\w/-]*\b/?(?!@))", ""),
    (r"@[\w\d]+\b", ""),
    (f"[{_CJK}]+", ""),
    (f"[{_DASHES}]+", "-"),
    ("[`´«»¨]", '"'),
    ("&quot;?", ""),
    ("&amp", ""),
    (r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}", " "),  # IP addresses
    (r"\d:\d\d\s+$", ""),                          # trailing article ids
    (r"\\n", " "),                                 # escaped newlines
    (r"#\d{1,3}\b", ""),
    (r"#\d{5,}\b", ""),
    (r"\b\d{6,}\b", ""),
    (rf"\S+\.(?:{_MEDIA})", ""),                   # file names
    (r"[\"']{2,}", '"'),
    (r"\.{2,}", " "),
    (r"[#®•©™&@·º½¾¿¡§~)(\]\[}{|\\/*]+", " "),
    (r"\s+\.\s+", " "),
)
_SEPARATORS = re.compile(r"[-_]")  # more than three: words-joined-like-this become words
_AFTER_FIX = _rules(
    (r"\b[a-zA-Z]{1,3}\d{3,15}\b", ""),            # product ids: jc6640
    (r"\b[a-zA-Z]+\d+[a-zA-Z]+\b", ""),            # jc6640vc
    (r"\b\d+[a-zA-Z]+\d+\b", ""),                  # 6640vc231
    (r"(worldwide\s+)?(free\s+)?shipping", ""),
    (r"(free\s)?download(\sfree)?", ""),
    (r"\bclick\b\s(?:for|on)\s\w+", ""),
    (rf"\b(?:{_MEDIA})(\simage[s]?)?", ""),
    (r"\bpage\s+\d+\b", ""),
    (r"\b\d*[a-zA-Z]+\d+[a-zA-Z]+\d+[a-zA-Z\d]*\b", " "),
    (r"\b\d+\.?\d*[xх×]\d+\.?\d*\b", ""),          # sizes: 1920x1080
    (r"\b\s+:\s+", ": "),
    (r"(\D[,./])\b", r"\1 "),
    (r"\s+", " "),
    (r"^[\"']([\w\W]+)[\"']$", r"\1"),             # outer quotes
    (r"^['_,\-:;]", ""),
    (r"['_,\-:+]$", ""),
    (r"^\.\S+$", ""),
)


def _apply(rules: list[tuple[re.Pattern, str]], text: str) -> str:
    for pattern, replacement in rules:
        text = pattern.sub(replacement, text)
    return text


def _unescape(text: str) -> str:
    return html.unescape(html.unescape(ftfy.fix_text(text)))  # twice: captions are often escaped twice


@CLEANERS.register("none")
def no_cleaning(text: str) -> str:
    return text


@CLEANERS.register("basic")
def basic(text: str) -> str:
    return " ".join(_unescape(text).split())


@CLEANERS.register("deepfloyd")
def deepfloyd(text: str) -> str:
    text = _apply(_BEFORE_FIX, urllib.parse.unquote_plus(text).strip().lower())
    if len(_SEPARATORS.findall(text)) > 3:
        text = _SEPARATORS.sub(" ", text)
    return _apply(_AFTER_FIX, _unescape(text).strip()).strip()
