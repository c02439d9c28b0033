"""What must be equal between two questions, beyond their embeddings, for one's answer to be
given to the other: the numbers, the negations and the named things they mention, and no
word of substance swapped for another.

Embeddings (lexical ones above all) score "Is X safe?" and "Is X not safe?", or "the 2023
figures" and "the 2024 figures", as near-twins; their answers are opposites. These checks
are cheap, deterministic and independent of the embedding model, so a semantic hit needs
both: a near embedding and the same facts asked about. A swap ("reverse a list" / "reverse
a string", "boiling point" / "freezing point") shows as words of substance each question
has and the other lacks; words only one side adds ("the capital *city* of France") are a
paraphrase's freedom. Measured on tests/data/semantic_pairs.jsonl (docs/caching.md).
"""

from __future__ import annotations

import re
from typing import NamedTuple

_TOKEN = re.compile(r"[A-Za-z][\w'\u2019.-]*[\w]|[A-Za-z]|\d+(?:[.,:/]\d+)*")
_NEGATIONS = frozenset(
    {"not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "nowhere", "without",
     "cannot", "cant", "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent", "wont",
     "wouldnt", "shouldnt", "couldnt", "hasnt", "havent", "hadnt", "mustnt", "neednt"}
)  # fmt: skip
_NUMBER_WORDS = frozenset(
    {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
     "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
     "nineteen", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
     "hundred", "thousand", "million", "billion", "trillion", "first", "second", "third",
     "fourth", "fifth", "half", "quarter", "double", "twice", "once", "dozen"}
)  # fmt: skip
# Words that start sentences capitalised without naming anything.
_COMMON = frozenset(
    {"a", "an", "the", "i", "i'm", "i've", "what", "what's", "whats", "how", "how's", "why",
     "when", "where", "who", "whom", "whose", "which", "can", "could", "would", "should",
     "will", "shall", "may", "might", "must", "is", "are", "was", "were", "do", "does", "did",
     "has", "have", "had", "please", "tell", "give", "explain", "describe", "list", "show",
     "write", "summarize", "summarise", "define", "compare", "name", "find", "help", "let",
     "in", "on", "at", "for", "from", "to", "of", "by", "with", "about", "and", "or", "but",
     "if", "so", "my", "our", "your", "we", "you", "it", "this", "that", "these", "those",
     "there", "here", "hi", "hello", "hey", "thanks", "ok", "okay", "yes", "briefly",
     "quickly", "simply", "again", "also", "any", "some", "all", "be", "me", "us"}
)  # fmt: skip


# Words that shape a question without being what it is about (question words, auxiliaries,
# politeness, request verbs): a paraphrase changes them freely.
_FUNCTION = (_COMMON | frozenset(
    {"am", "be", "been", "being", "there", "their", "they", "them", "some", "many", "much",
     "more", "most", "very", "just", "also", "make", "get", "use", "using", "used", "like",
     "need", "want", "know", "say", "go", "going", "suggest", "a", "an", "as", "into", "than",
     "then", "its", "his", "her", "he", "she", "vs", "versus", "way", "ways", "exactly",
     "really", "actually", "kind", "one", "someone", "something"}
)) - {"list", "show", "name", "find", "compare", "write"}  # fmt: skip


def _stem(word: str) -> str:
    """Plural and tense endings off, enough for "names"/"name" and "creating"/"create"."""
    return _unsuffixed(word).removesuffix("e")


def _unsuffixed(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 4 and word.endswith("ed") and not word.endswith("eed"):
        return word[:-1] if word.endswith("ated") else word[:-2]
    return word


class Facts(NamedTuple):
    numbers: frozenset[str]
    negations: int
    names: frozenset[str]
    words: frozenset[str]
    terms: frozenset[str]  # words of substance, stemmed


def facts(text: str) -> Facts:
    numbers: set[str] = set()
    names: set[str] = set()
    words: set[str] = set()
    raw: set[str] = set()
    negations = 0
    start = True
    for match in _TOKEN.finditer(text):
        token = match.group()
        word = token.lower().replace("\u2019", "'")
        bare = word.replace("'", "")
        plain = word.strip(".'").removesuffix("'s")
        raw.add(plain)
        words.add(_stem(plain))
        if token[0].isdigit():
            numbers.add(token.replace(",", ""))
        elif bare in _NUMBER_WORDS:
            numbers.add(bare)
        elif bare in _NEGATIONS or word.endswith("n't"):
            negations += 1
        elif _named(token, word, start):
            names.add(_stem(plain))
        start = token[-1] in ".!?" or text[match.end() : match.end() + 1] in (".", "!", "?", ":")
    terms = frozenset(
        _stem(w) for w in raw if len(w) > 1 and w not in _FUNCTION and not w[0].isdigit()
    )
    return Facts(frozenset(numbers), negations, frozenset(names), frozenset(words), terms)


def _named(token: str, word: str, start: bool) -> bool:
    """An acronym, a mixed-case or dotted name, or a capitalised word that is not a common
    one and does not start a sentence (where any word is capitalised; a name there is still
    caught as a swapped term)."""
    if word in _COMMON:
        return False
    if len(token) > 1 and token.isupper():
        return True
    if any(c.isupper() for c in token[1:]) or "." in token.strip("."):
        return True
    return token[0].isupper() and not start


def same_facts(a: str, b: str) -> bool:
    """The same numbers, as many negations, and every name either mentions present in the
    other (in any case: "python" and "Python" are one name)."""
    fa, fb = facts(a), facts(b)
    swapped = bool(fa.terms - fb.terms) and bool(fb.terms - fa.terms)
    return (
        fa.numbers == fb.numbers
        and fa.negations == fb.negations
        and fa.names <= fb.words
        and fb.names <= fa.words
        and not swapped
    )
