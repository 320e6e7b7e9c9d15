-- A double-ended queue and a few list helpers.
local Deque = {}
Deque.__index = Deque

function Deque.new()
  return setmetatable({ first = 1, last = 0, items = {} }, Deque)
end

function Deque:push_back(value)
  self.last = self.last + 1
  self.items[self.last] = value
end

function Deque:push_front(value)
  self.first = self.first - 1
  self.items[self.first] = value
end

function Deque:pop_front()
  if self.first > self.last then
    return nil
  end
  local value = self.items[self.first]
  self.items[self.first] = nil
  self.first = self.first + 1
  return value
end

function Deque:pop_back()
  if self.first > self.last then
    return nil
  end
  local value = self.items[self.last]
  self.items[self.last] = nil
  self.last = self.last - 1
  return value
end

function Deque:size()
  return self.last - self.first + 1
end

local function map(list, fn)
  local out = {}
  for i, v in ipairs(list) do
    out[i] = fn(v)
  end
  return out
end

local function filter(list, pred)
  local out = {}
  for _, v in ipairs(list) do
    if pred(v) then
      out[#out + 1] = v
    end
  end
  return out
end

local function reduce(list, fn, acc)
  for _, v in ipairs(list) do
    acc = fn(acc, v)
  end
  return acc
end

return { Deque = Deque, map = map, filter = filter, reduce = reduce }
