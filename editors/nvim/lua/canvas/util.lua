-- Small helpers shared by the canvas modules: LSP position <-> buffer byte position conversion.
local M = {}

local api = vim.api

--- The text of line `row` (0-based) of `bufnr`, or "" past the end.
function M.line(bufnr, row)
  return api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ''
end

--- LSP position {line, character} -> 0-based {row, byte col} in the buffer.
function M.to_byte(bufnr, pos, encoding)
  local row = pos.line
  local line_count = api.nvim_buf_line_count(bufnr)
  if row >= line_count then -- a position just past the last line: the end of the buffer
    local last = M.line(bufnr, line_count - 1)
    return line_count - 1, #last
  end
  local text = M.line(bufnr, row)
  if encoding == 'utf-8' then
    return row, math.min(pos.character, #text)
  end
  local ok, col = pcall(vim.str_byteindex, text, encoding or 'utf-16', pos.character, false)
  if not ok or not col then
    col = #text
  end
  return row, math.min(col, #text)
end

--- 0-based {row, byte col} -> LSP position.
function M.to_lsp(bufnr, row, col, encoding)
  local text = M.line(bufnr, row)
  col = math.min(col, #text)
  if encoding == 'utf-8' then
    return { line = row, character = col }
  end
  local ok, character = pcall(vim.str_utfindex, text, encoding or 'utf-16', col, false)
  if not ok or not character then
    character = col
  end
  return { line = row, character = character }
end

--- The text of insertText (a string or an lsp.StringValue snippet, taken literally).
function M.insert_text(item)
  local t = item.insertText
  if type(t) == 'table' then
    local ok, grammar = pcall(require, 'vim.lsp._snippet_grammar')
    if ok then
      local parsed_ok, parsed = pcall(grammar.parse, t.value)
      if parsed_ok then
        return tostring(parsed)
      end
    end
    return t.value or ''
  end
  return t or ''
end

--- Text between two 0-based byte positions (end exclusive).
function M.text_between(bufnr, srow, scol, erow, ecol)
  if erow < srow or (erow == srow and ecol <= scol) then
    return ''
  end
  local ok, parts = pcall(api.nvim_buf_get_text, bufnr, srow, scol, erow, ecol, {})
  return ok and table.concat(parts, '\n') or ''
end

return M
