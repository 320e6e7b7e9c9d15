import re
import sys
from collections import Counter

WORD = re.compile(r"[A-Za-z']+")
STOP_WORDS = {"the", "a", "an", "and", "or", "of", "to", "in", "is", "it"}


def words(text):
    """Lower-cased words of ``text``."""
    return [w.lower() for w in WORD.findall(text)]


def word_counts(text, skip_stop_words=True):
    counts = Counter()
    for word in words(text):
        if skip_stop_words and word in STOP_WORDS:
            continue
        counts[word] += 1
    return counts


def sentences(text):
    parts = re.split(r"(?<=[.!?])\s+", text.strip())
    return [p for p in parts if p]


def average_sentence_length(text):
    found = sentences(text)
    if not found:
        return 0.0
    total = sum(len(words(s)) for s in found)
    return total / len(found)


def longest_words(text, n=5):
    unique = set(words(text))
    ranked = sorted(unique, key=lambda w: (-len(w), w))
    return ranked[:n]


def histogram(counts, width=40):
    """Render a text bar chart of the most common words."""
    if not counts:
        return ""
    top = counts.most_common(10)
    biggest = top[0][1]
    lines = []
    for word, count in top:
        bar = "#" * max(1, round(width * count / biggest))
        lines.append(f"{word:>12} {bar} {count}")
    return "\n".join(lines)


def summarize(text):
    counts = word_counts(text)
    return {
        "words": sum(counts.values()),
        "distinct": len(counts),
        "sentences": len(sentences(text)),
        "average_sentence": round(average_sentence_length(text), 2),
        "longest": longest_words(text),
    }


def main(argv):
    if len(argv) < 2:
        print("usage: text_stats.py FILE", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        text = f.read()
    try:
        report = summarize(text)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    else:
        for key, value in report.items():
            print(f"{key}: {value}")
        print(histogram(word_counts(text)))
    finally:
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
