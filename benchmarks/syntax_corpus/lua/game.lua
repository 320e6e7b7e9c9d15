-- A grid game of life with a tiny renderer.
local Life = {}
Life.__index = Life

function Life.new(width, height)
  local self = setmetatable({ width = width, height = height, cells = {} }, Life)
  for y = 1, height do
    self.cells[y] = {}
    for x = 1, width do
      self.cells[y][x] = false
    end
  end
  return self
end

function Life:set(x, y, alive)
  self.cells[y][x] = alive
end

function Life:neighbours(x, y)
  local count = 0
  for dy = -1, 1 do
    for dx = -1, 1 do
      if not (dx == 0 and dy == 0) then
        local nx = (x + dx - 1) % self.width + 1
        local ny = (y + dy - 1) % self.height + 1
        if self.cells[ny][nx] then
          count = count + 1
        end
      end
    end
  end
  return count
end

function Life:step()
  local next = Life.new(self.width, self.height)
  for y = 1, self.height do
    for x = 1, self.width do
      local n = self:neighbours(x, y)
      local alive = self.cells[y][x]
      next.cells[y][x] = (alive and (n == 2 or n == 3)) or (not alive and n == 3)
    end
  end
  return next
end

function Life:render()
  local rows = {}
  for y = 1, self.height do
    local row = {}
    for x = 1, self.width do
      row[x] = self.cells[y][x] and "#" or "."
    end
    rows[y] = table.concat(row)
  end
  return table.concat(rows, "\n")
end

local function run(game, generations)
  local i = 0
  repeat
    game = game:step()
    i = i + 1
  until i >= generations
  return game
end

return { Life = Life, run = run }
