// Package collections holds small generic containers.
package collections

import (
	"errors"
	"fmt"
	"strings"
)

// ErrEmpty is returned when popping from an empty stack.
var ErrEmpty = errors.New("empty stack")

// Stack is a LIFO container.
type Stack[T any] struct {
	items []T
}

// Push adds an item on top.
func (s *Stack[T]) Push(item T) {
	s.items = append(s.items, item)
}

// Pop removes and returns the top item.
func (s *Stack[T]) Pop() (T, error) {
	var zero T
	if len(s.items) == 0 {
		return zero, ErrEmpty
	}
	last := s.items[len(s.items)-1]
	s.items = s.items[:len(s.items)-1]
	return last, nil
}

// Len reports the number of items.
func (s *Stack[T]) Len() int {
	return len(s.items)
}

// Balanced reports whether the brackets in text are balanced.
func Balanced(text string) bool {
	pairs := map[rune]rune{')': '(', ']': '[', '}': '{'}
	var s Stack[rune]
	for _, r := range text {
		switch r {
		case '(', '[', '{':
			s.Push(r)
		case ')', ']', '}':
			top, err := s.Pop()
			if err != nil || top != pairs[r] {
				return false
			}
		}
	}
	return s.Len() == 0
}

// String renders the stack bottom to top.
func (s *Stack[T]) String() string {
	parts := make([]string, 0, len(s.items))
	for _, item := range s.items {
		parts = append(parts, fmt.Sprint(item))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// Reverse returns the items top to bottom.
func (s *Stack[T]) Reverse() []T {
	out := make([]T, len(s.items))
	for i, item := range s.items {
		out[len(s.items)-1-i] = item
	}
	return out
}
