package wordfreq

import (
	"bufio"
	"io"
	"sort"
	"strings"
	"unicode"
)

// Pair is a word and how often it occurs.
type Pair struct {
	Word  string
	Count int
}

// Count reads words from r and counts them, case-insensitively.
func Count(r io.Reader) (map[string]int, error) {
	counts := make(map[string]int)
	scanner := bufio.NewScanner(r)
	scanner.Split(bufio.ScanWords)
	for scanner.Scan() {
		word := strings.ToLower(strings.TrimFunc(scanner.Text(), func(r rune) bool {
			return !unicode.IsLetter(r)
		}))
		if word != "" {
			counts[word]++
		}
	}
	if err := scanner.Err(); err != nil {
		return nil, err
	}
	return counts, nil
}

// Top returns the n most frequent words, ties broken alphabetically.
func Top(counts map[string]int, n int) []Pair {
	pairs := make([]Pair, 0, len(counts))
	for w, c := range counts {
		pairs = append(pairs, Pair{w, c})
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].Count != pairs[j].Count {
			return pairs[i].Count > pairs[j].Count
		}
		return pairs[i].Word < pairs[j].Word
	})
	if n < len(pairs) {
		pairs = pairs[:n]
	}
	return pairs
}

// Merge adds the counts of b into a.
func Merge(a, b map[string]int) {
	for w, c := range b {
		a[w] += c
	}
}

// Longest returns the longest word, or "" for no words.
func Longest(counts map[string]int) string {
	best := ""
	for w := range counts {
		if len(w) > len(best) || (len(w) == len(best) && w < best) {
			best = w
		}
	}
	return best
}
