"""The customer's mood from their own recent words: "negative", "positive", or None if unsure.

A wrong mood misleads the agent more than none, so the analyser abstains unless its cues are
clear. It reads English only: a text in another language (or script) is left out. Greetings
and politeness ("hello", "please", "thanks") carry no mood, since customers write them into
complaints too. Support complaints rarely use emotional words ("my card was charged twice,
please refund"), so their usual patterns count as negative. A negated cue ("not happy",
"not broken") is turned or dropped. Every expression is a plain alternation or scan, linear
in the text's length.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

NEGATIVE = "negative"
POSITIVE = "positive"

WORDS = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


# Frequent English words that carry no mood: their share tells English from other languages.
ENGLISH = _word_set(
    "a about after again all am an and any are as at be been but by can could did do does "
    "for from get got had has have he her his how i i'm i've if in into is it it's its just "
    "me my no not now of on one or our out over same since so than that the their them then "
    "there they this to too twice up us was we were what when where which while who why will "
    "with would you your"
)
# Frequent words of the languages customers also write in, none of them an English word.
FOREIGN = _word_set(
    # German
    "der das und ist nicht ich mein meine meinen mir mich wurde wurden zweimal bitte danke "
    "habe hat eine einen kein keine noch immer schon auch sich sie wir ihr für über wieder "
    "geld zurück funktioniert kaputt geht leider "
    # Spanish
    "el los las es mi mis que del por para una fue gracias tengo pero muy también todavía "
    "dos veces cobrado cobraron funciona roto hola está están hemos "
    # French
    "le les et est je mon ma mes pas des une pour avec merci vous nous toujours été "
    "fois deux facturé fonctionne cassé bonjour mais très "
    # Italian
    "il lo gli è non mio mia miei di che sono ho grazie ancora volte addebitato funziona "
    "rotto ciao buongiorno anche molto "
    # Dutch, Portuguese, and words the Romance languages share
    "het een niet mijn ik dank twee keer não obrigado obrigada meu minha foi duas vezes "
    "de la en un du au al con y e del nel"
)  # fmt: skip
MIN_WORDS = 2
MIN_ENGLISH_SHARE = 0.1
MAX_OTHER_LETTERS = 0.1  # letters outside ASCII: accents, other scripts

# Greetings and their like carry no mood ("Good morning" is not praise).
GREETING = re.compile(r"\b(?:good (?:morning|afternoon|evening|day)|hope you(?:'re| are) well)\b")
# Patterns of support complaints, in the words customers use; they count in questions too.
COMPLAINT = re.compile(
    r"\b(?:charged (?:me )?(?:twice|two times|again|double)|double[- ]charged?|overcharged"
    r"|(?:want|need|demand|expect|request|give me|get) (?:a |my |the |full )*refund"
    r"|refund (?:me|my|it|this|the charge)|please refund"
    r"|still (?:have |had |got )?"
    r"(?:not|no|nothing|hasn't|haven't|isn't|doesn't|don't|can't|waiting|broken)"
    r"|(?:doesn't|does not|won't|will not|isn't|is not|not|stopped|can't|cannot) "
    r"(?:work|working|load|loading|start|turn on|connect|open)"
    r"|never (?:arrived|came|received|got|showed up|turned up)"
    r"|(?:hasn't|has not|haven't|have not|didn't) (?:arrived|received|got|gotten|heard)"
    r"|no (?:one|response|reply|answer)"
    r"|keeps? (?:crashing|failing|freezing)|(?:cancel|close) my (?:account|subscription)"
    r"|sick of|fed up)"
)
# Praise and warm thanks; a bare "thanks" closes complaints as often as praise, so it is not.
PRAISE = re.compile(
    r"\b(?:thank you so much|thanks so much|thanks a lot|thank you very much"
    r"|thanks again|really appreciate|works now|working now|works again|working again)\b"
)
# Cue words, matched whole, outside questions ("will it be fixed?" is no praise).
NEGATIVE_CUES = re.compile(
    r"frustrat\w*|disappoint\w*|annoy\w*|angry|furious|upset|unacceptabl[ey]|ridiculous"
    r"|terribl[ey]|horribl[ey]|awful|worst|useless|broken|broke|cracked|damaged|scam\w*"
    r"|fraud\w*|complain\w*|crash\w*|fail\w*|wrong|missing|bad|poor|rude|wasted?|unhappy"
    r"|hate[ds]?|nightmare|errors?"
)
POSITIVE_CUES = re.compile(
    r"great|excellent|perfect(?:ly)?|awesome|amazing|wonderful|fantastic|lov(?:e|ed|ely)|happy"
    r"|glad|pleased|helpful|appreciated?|resolved|fixed|sorted|superb|brilliant|good"
)
NEGATORS = _word_set(
    "not no never isn't wasn't aren't weren't don't doesn't didn't won't can't cannot "
    "hasn't haven't hardly"
)
NEGATION_REACH = 3  # a negator this many words back turns a cue
# A turn in a mixed message: "great app, but the export is broken".
CONTRAST = re.compile(r"\b(?:but|however|although|though)\b")
SENTENCE = re.compile(r"[^.!?\n]+[.!?\n]*")


def covered(text: str) -> bool:
    """Tell whether the text is English enough for the cues to be trusted."""
    words = WORDS.findall(text)
    if len(words) < MIN_WORDS:
        return False
    letters = sum(len(w) for w in words)
    other = sum(1 for w in words for c in w if not c.isascii())
    if other > MAX_OTHER_LETTERS * letters:
        return False
    english = sum(1 for w in words if w in ENGLISH)
    foreign = sum(1 for w in words if w in FOREIGN)
    return foreign < english and english >= MIN_ENGLISH_SHARE * len(words)


def _cues(sentence: str) -> tuple[int, int]:
    """Count the negative and positive cue words of a statement, turning negated ones."""
    if sentence.rstrip().endswith("?"):
        return 0, 0
    negative = positive = 0
    for clause in sentence.split(","):  # a negation does not reach past a comma
        words = WORDS.findall(clause)
        for index, word in enumerate(words):
            negated = any(w in NEGATORS for w in words[max(0, index - NEGATION_REACH) : index])
            if NEGATIVE_CUES.fullmatch(word):
                negative += 0 if negated else 1  # "not broken" says nothing
            elif POSITIVE_CUES.fullmatch(word) and negated:
                negative += 1  # "not happy"
            elif POSITIVE_CUES.fullmatch(word):
                positive += 1
    return negative, positive


def _rating(flat: str) -> str | None:
    """Rate a lower-cased text on its cues alone; None unless they all point one way."""
    negative = len(COMPLAINT.findall(flat))
    positive = len(PRAISE.findall(flat))
    for sentence in SENTENCE.findall(flat):
        more_negative, more_positive = _cues(sentence)
        negative, positive = negative + more_negative, positive + more_positive
    if negative and not positive:
        return NEGATIVE
    if positive and not negative:
        return POSITIVE
    turns = [turn.end() for turn in CONTRAST.finditer(flat)]
    if negative and positive and turns:
        return _rating(flat[turns[-1] :])  # what follows the last "but" is what they mean
    return None


def text_mood(text: str) -> str | None:
    """Rate one text: negative, positive, or None when it is neutral, mixed or not English."""
    flat = GREETING.sub(" ", " ".join(text.lower().replace("\u2019", "'").split()))
    return _rating(flat) if covered(flat) else None


def mood_of(texts: Sequence[str]) -> str | None:
    """Rate the customer's recent texts, newest first: the newest text with a clear mood."""
    for text in texts:
        mood = text_mood(text)
        if mood is not None:
            return mood
    return None
