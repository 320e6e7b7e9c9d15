-- Read "key = value" settings with defaults and type checks.
local M = {}

local defaults = {
  width = 80,
  height = 24,
  title = "untitled",
  fullscreen = false,
}

local function trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

local function convert(value, example)
  local kind = type(example)
  if kind == "number" then
    local n = tonumber(value)
    if n == nil then
      error("expected a number, got " .. value)
    end
    return n
  elseif kind == "boolean" then
    return value == "true" or value == "yes"
  else
    return value
  end
end

function M.parse(text)
  local settings = {}
  for k, v in pairs(defaults) do
    settings[k] = v
  end
  local lineno = 0
  for line in text:gmatch("[^\n]+") do
    lineno = lineno + 1
    line = trim(line)
    if line ~= "" and line:sub(1, 1) ~= "#" then
      local key, value = line:match("^([%w_]+)%s*=%s*(.-)$")
      if not key then
        error(string.format("line %d: cannot parse %q", lineno, line))
      end
      if defaults[key] == nil then
        error("unknown setting " .. key)
      end
      settings[key] = convert(value, defaults[key])
    end
  end
  return settings
end

function M.dump(settings)
  local keys = {}
  for k in pairs(settings) do
    keys[#keys + 1] = k
  end
  table.sort(keys)
  local lines = {}
  for _, k in ipairs(keys) do
    lines[#lines + 1] = k .. " = " .. tostring(settings[k])
  end
  return table.concat(lines, "\n")
end

return M
