-- canvas-ls for Neovim 0.11+: a code-infilling language server (text diffusion).
--
--   require("canvas").setup({
--     cmd = { "/path/to/canvas-ls/.venv/bin/canvas-ls", "serve" },
--     settings = { maxSteps = 16 },            -- server settings, as the server names them
--     keymaps = { accept = "<Tab>", dismiss = "<C-]>", trigger = "<M-\\>" },
--   })
--
-- See :help canvas (editors/nvim/doc/canvas.txt) and the "Neovim" section of the repository's README.md.
local util = require('canvas.util')

local api = vim.api
local M = {}

M.client_name = 'canvas_ls'
M.version = '0.1.0'

local defaults = {
  -- How to start the server.
  cmd = { 'canvas-ls', 'serve' },
  filetypes = { 'python', 'javascript', 'javascriptreact', 'typescript', 'typescriptreact', 'go', 'rust', 'lua' },
  root_markers = { '.git', 'pyproject.toml', 'package.json', 'go.mod', 'Cargo.toml' },
  -- Server settings (sent as initializationOptions, and with workspace/didChangeConfiguration).
  -- Names as the server has them: modelPath, device, dtype, maxSteps, seed, ... (see the
  -- "Configuration" table in the repository's README.md).
  settings = {},
  -- Draw the intermediate canvas of each denoising step (sets the server's liveCanvas setting).
  live_canvas = true,
  inline = {
    enabled = true,
    -- "auto": the built-in vim.lsp.inline_completion where Neovim has it (0.12+), else the plugin's own;
    -- "builtin" or "plugin" to choose.
    mode = 'auto',
    auto_trigger = true, -- ask while typing in insert mode (plugin path; the built-in one always does)
    debounce_ms = 150,
  },
  -- Insert-mode keys, buffer-local to buffers canvas-ls is attached to; false to leave a key alone.
  -- accept and dismiss only act while a suggestion is shown; otherwise the key does what it did before.
  keymaps = {
    accept = '<Tab>',
    dismiss = '<C-]>',
    trigger = '<M-\\>',
  },
  -- Show a message after :CanvasFill / :CanvasFillBody / :CanvasRepair.
  notify = true,
}

M.config = vim.deepcopy(defaults)

--- Counters, for tests and :checkhealth.
-- live_marks_max: the most live-canvas extmarks one step drew (tests read it: steps can be drawn and
-- cleared within one event-loop turn, too fast to poll)
M.stats = { steps_drawn = 0, live_cleared = 0, fills = 0, live_marks_max = 0 }

-- ---------------------------------------------------------------------------------------------------
-- Server settings
-- ---------------------------------------------------------------------------------------------------

local function server_settings()
  local s = vim.deepcopy(M.config.settings or {})
  if s.liveCanvas == nil then
    s.liveCanvas = M.config.live_canvas and true or false
  end
  return s
end

function M.get_client(bufnr)
  local clients = vim.lsp.get_clients({ bufnr = bufnr, name = M.client_name })
  if #clients == 0 and bufnr ~= nil then
    return nil
  end
  return clients[1]
end

--- Change server settings at run time (merged into the current ones; sent to running clients).
function M.update_settings(settings)
  M.config.settings = vim.tbl_deep_extend('force', M.config.settings or {}, settings or {})
  local s = server_settings()
  for _, client in ipairs(vim.lsp.get_clients({ name = M.client_name })) do
    client.settings = { canvas = s }
    client:notify('workspace/didChangeConfiguration', { settings = { canvas = s } })
  end
end

-- ---------------------------------------------------------------------------------------------------
-- Live canvas (canvas/step notifications)
-- ---------------------------------------------------------------------------------------------------

M.live_ns = api.nvim_create_namespace('canvas.live')

local function buf_for_uri(uri)
  local ok, bufnr = pcall(vim.uri_to_bufnr, uri)
  if ok and bufnr and api.nvim_buf_is_loaded(bufnr) then
    return bufnr
  end
  return nil
end

function M.clear_live(bufnr)
  if bufnr and api.nvim_buf_is_valid(bufnr) then
    api.nvim_buf_clear_namespace(bufnr, M.live_ns, 0, -1)
  end
end

--- Draw one step of the canvas: an empty hole as inline faded text (more lines as virtual lines), a
--- replaced range highlighted as going away with the canvas below it.
local function draw_step(bufnr, client, params)
  api.nvim_buf_clear_namespace(bufnr, M.live_ns, 0, -1)
  local enc = client and client.offset_encoding or 'utf-16'
  for i, span in ipairs(params.spans or {}) do
    local srow, scol = util.to_byte(bufnr, span.range.start, enc)
    local erow, ecol = util.to_byte(bufnr, span.range['end'], enc)
    local lines = vim.split(span.text or '', '\n', { plain = true })
    local label = i == 1 and { ('  canvas %d/%d'):format(params.step or 0, params.maxSteps or 0), 'CanvasLiveInfo' } or nil
    if srow == erow and scol == ecol then
      local opts = {
        virt_text = { { lines[1], 'CanvasLive' } },
        virt_text_pos = 'inline',
        hl_mode = 'combine',
        priority = 190,
      }
      if #lines > 1 then
        local vl = {}
        for j = 2, #lines do
          vl[#vl + 1] = { { lines[j], 'CanvasLive' } }
        end
        if label then
          table.insert(vl[#vl], label)
        end
        opts.virt_lines = vl
      elseif label then
        api.nvim_buf_set_extmark(bufnr, M.live_ns, srow, 0, { virt_text = { label }, virt_text_pos = 'eol' })
      end
      api.nvim_buf_set_extmark(bufnr, M.live_ns, srow, scol, opts)
    else
      api.nvim_buf_set_extmark(bufnr, M.live_ns, srow, scol, {
        end_row = erow,
        end_col = ecol,
        hl_group = 'CanvasLiveReplaced',
        priority = 190,
      })
      local vl = {}
      for _, l in ipairs(lines) do
        vl[#vl + 1] = { { l, 'CanvasLive' } }
      end
      if label then
        table.insert(vl[#vl], label)
      end
      -- below the last line of the range (a range ending at column 0 ends on the line before)
      local anchor = (ecol == 0 and erow > srow) and erow - 1 or erow
      anchor = math.min(anchor, api.nvim_buf_line_count(bufnr) - 1)
      api.nvim_buf_set_extmark(bufnr, M.live_ns, anchor, 0, { virt_lines = vl })
    end
  end
end

--- Handler for the server's canvas/step notification.
function M.on_step(err, params, ctx)
  if err or type(params) ~= 'table' or not params.uri then
    return
  end
  local bufnr = buf_for_uri(params.uri)
  if not bufnr then
    return
  end
  if params.done then
    M.clear_live(bufnr)
    M.stats.live_cleared = M.stats.live_cleared + 1
    return
  end
  -- Ranges refer to the document version the fill started from: skip a step for an older text.
  local version = vim.lsp.util.buf_versions[bufnr]
  if version ~= nil and params.version ~= nil and version ~= params.version then
    M.clear_live(bufnr)
    return
  end
  local client = ctx and vim.lsp.get_client_by_id(ctx.client_id)
  local ok, e = pcall(draw_step, bufnr, client, params)
  if ok then
    M.stats.steps_drawn = M.stats.steps_drawn + 1
    local marks = #api.nvim_buf_get_extmarks(bufnr, M.live_ns, 0, -1, {})
    M.stats.live_marks_max = math.max(M.stats.live_marks_max, marks)
  else
    M.clear_live(bufnr)
    vim.notify_once('canvas-ls: could not draw the live canvas: ' .. tostring(e), vim.log.levels.DEBUG)
  end
end

-- ---------------------------------------------------------------------------------------------------
-- Commands
-- ---------------------------------------------------------------------------------------------------

local function notify(msg, level)
  if M.config.notify then
    vim.notify(msg, level or vim.log.levels.INFO)
  end
end

local function done(bufnr, command, err, result)
  M.stats.fills = M.stats.fills + 1
  M.clear_live(bufnr)
  if err then
    if err.code == -32800 then
      notify('canvas-ls: fill cancelled', vim.log.levels.WARN)
    else
      notify('canvas-ls: ' .. (err.message or vim.inspect(err)), vim.log.levels.ERROR)
    end
  elseif type(result) == 'table' then
    if command == 'canvas.repairSelection' and result.applied then
      notify(
        ('canvas-ls: repaired (%d token%s changed, %d edit%s, %.2fs)'):format(
          result.changedTokens or 0,
          (result.changedTokens or 0) == 1 and '' or 's',
          result.edits or 0,
          (result.edits or 0) == 1 and '' or 's',
          tonumber(result.seconds) or 0
        )
      )
    elseif command == 'canvas.repairSelection' and tostring(result.reason or ''):find('^nothing') then
      -- "nothing to repair", or "nothing repaired: every change ... would add a syntax error"
      notify('canvas-ls: ' .. result.reason, result.reason:find('^nothing to repair') and vim.log.levels.INFO or vim.log.levels.WARN)
    elseif result.applied then
      notify(
        ('canvas-ls: filled (%d edit%s, %s forward passes, %.2fs)'):format(
          result.edits or 0,
          (result.edits or 0) == 1 and '' or 's',
          tostring(result.forwardPasses or '?'),
          tonumber(result.seconds) or 0
        )
      )
    else
      notify('canvas-ls: nothing filled: ' .. tostring(result.reason or ''), vim.log.levels.WARN)
    end
  end
  api.nvim_exec_autocmds('User', {
    pattern = 'CanvasFillDone',
    modeline = false,
    data = { bufnr = bufnr, command = command, result = result, error = err },
  })
end

-- workspace/executeCommand requests in flight: "client_id:request_id" -> callback. Neovim drops the
-- answer to a request whose error is RequestCancelled (-32800) without calling its handler, even when
-- the server (not we) cancelled it, e.g. because a newer fill for the same document superseded it;
-- the LspRequest "complete" event still comes, so callbacks left waiting then are told "cancelled".
local pending = {}

local function exec(bufnr, command, arguments, callback)
  local client = M.get_client(bufnr)
  if not client then
    vim.notify('canvas-ls: not attached to this buffer (is the server running? :checkhealth canvas)', vim.log.levels.ERROR)
    return false
  end
  local key
  local ok, request_id = client:request('workspace/executeCommand', { command = command, arguments = arguments }, function(err, result)
    if key then
      if pending[key] == nil then
        return -- already answered (as cancelled)
      end
      pending[key] = nil
    end
    callback(err, result)
  end, bufnr)
  if ok and request_id then
    key = client.id .. ':' .. request_id
    pending[key] = callback
  end
  return ok
end

function M._on_lsp_request(args)
  local d = args.data or {}
  if not d.request or d.request.type ~= 'complete' or not d.client_id or not d.request_id then
    return
  end
  local key = d.client_id .. ':' .. d.request_id
  if not pending[key] then
    return
  end
  vim.schedule(function() -- the handler of an ordinary answer has run by now
    local cb = pending[key]
    if cb then
      pending[key] = nil
      cb({ code = -32800, message = 'cancelled (a newer request replaced it, or it was cancelled)' }, nil)
    end
  end)
end

--- The ranges of a selection: charwise (v), linewise (V) or one per line (CTRL-V). Positions 1-based
--- {line, col} with an inclusive end as getpos() gives them.
function M.selection_ranges(bufnr, vmode, spos, epos, enc)
  local srow, scol = spos[1] - 1, spos[2] - 1
  local erow, ecol = epos[1] - 1, epos[2] - 1
  if srow > erow or (srow == erow and scol > ecol) then
    srow, scol, erow, ecol = erow, ecol, srow, scol
  end
  local function end_of_char(row, col) -- byte after the (inclusive) end character
    local line = util.line(bufnr, row)
    if col >= #line then
      return #line
    end
    local ok, n = pcall(vim.str_utf_end, line, col + 1)
    return col + 1 + (ok and n or 0)
  end
  local ranges = {}
  if vmode == 'V' then
    local last = api.nvim_buf_line_count(bufnr)
    local s = util.to_lsp(bufnr, srow, 0, enc)
    local e
    if erow + 1 < last then
      e = { line = erow + 1, character = 0 }
    else
      e = util.to_lsp(bufnr, erow, #util.line(bufnr, erow), enc)
    end
    ranges[1] = { start = s, ['end'] = e }
  elseif vmode == '\22' then -- blockwise: one hole per line
    local c1, c2 = math.min(scol, ecol), math.max(scol, ecol)
    for row = srow, erow do
      local line = util.line(bufnr, row)
      if c1 < #line then
        ranges[#ranges + 1] = { start = util.to_lsp(bufnr, row, c1, enc), ['end'] = util.to_lsp(bufnr, row, end_of_char(row, c2), enc) }
      end
    end
  else
    ranges[1] = { start = util.to_lsp(bufnr, srow, scol, enc), ['end'] = util.to_lsp(bufnr, erow, end_of_char(erow, ecol), enc) }
  end
  return ranges
end

--- Fill LSP ranges (every range a hole, all filled on one canvas). callback(err, result) optional.
function M.fill_ranges(bufnr, ranges, callback)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  notify('canvas-ls: filling…')
  return exec(bufnr, 'canvas.fillSelection', { vim.uri_from_bufnr(bufnr), ranges }, function(err, result)
    done(bufnr, 'canvas.fillSelection', err, result)
    if callback then
      callback(err, result)
    end
  end)
end

--- The LSP ranges of a command's selection: the last visual selection, or, given a line range that is
--- not it, those lines. nil (with a message) when there is none.
local function command_ranges(opts, bufnr, command)
  opts = opts or {}
  local client = M.get_client(bufnr)
  if not client then
    vim.notify('canvas-ls: not attached to this buffer (:checkhealth canvas)', vim.log.levels.ERROR)
    return nil
  end
  local enc = client.offset_encoding
  local vs, ve = vim.fn.getpos("'<"), vim.fn.getpos("'>")
  local vmode = vim.fn.visualmode()
  local ranges
  local has_visual = vs[2] > 0 and ve[2] > 0
  if opts.range and opts.range > 0 and has_visual and opts.line1 == math.min(vs[2], ve[2]) and opts.line2 == math.max(vs[2], ve[2]) then
    ranges = M.selection_ranges(bufnr, vmode ~= '' and vmode or 'v', { vs[2], vs[3] }, { ve[2], ve[3] }, enc)
  elseif opts.range and opts.range > 0 then
    ranges = M.selection_ranges(bufnr, 'V', { opts.line1, 1 }, { opts.line2, 1 }, enc)
  else
    vim.notify(('canvas-ls: select the code first (visual mode, then :%s)'):format(command), vim.log.levels.WARN)
    return nil
  end
  return #ranges > 0 and ranges or nil
end

--- :CanvasFill — fill the last visual selection (or, given a line range that is not it, those lines).
function M.fill_selection(opts)
  local bufnr = api.nvim_get_current_buf()
  local ranges = command_ranges(opts, bufnr, 'CanvasFill')
  if not ranges then
    return false
  end
  return M.fill_ranges(bufnr, ranges)
end

--- Repair LSP ranges: the model re-noises the tokens it finds unlikely (below the server's
--- repairThreshold) or the syntax judge blames, and denoises them with the rest held. One range is
--- sent as [uri, range]; several (a block selection) as [uri, ranges]. callback(err, result) optional.
function M.repair_ranges(bufnr, ranges, callback)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  notify('canvas-ls: repairing…')
  local where = #ranges == 1 and ranges[1] or ranges
  return exec(bufnr, 'canvas.repairSelection', { vim.uri_from_bufnr(bufnr), where }, function(err, result)
    done(bufnr, 'canvas.repairSelection', err, result)
    if callback then
      callback(err, result)
    end
  end)
end

--- :CanvasRepair — repair the last visual selection (or, given a line range that is not it, those lines).
function M.repair_selection(opts)
  local bufnr = api.nvim_get_current_buf()
  local ranges = command_ranges(opts, bufnr, 'CanvasRepair')
  if not ranges then
    return false
  end
  return M.repair_ranges(bufnr, ranges)
end

--- :CanvasFillBody — regenerate the body of the function around the cursor.
function M.fill_body(callback)
  local bufnr = api.nvim_get_current_buf()
  local client = M.get_client(bufnr)
  if not client then
    vim.notify('canvas-ls: not attached to this buffer (:checkhealth canvas)', vim.log.levels.ERROR)
    return false
  end
  local cursor = api.nvim_win_get_cursor(0)
  local pos = util.to_lsp(bufnr, cursor[1] - 1, cursor[2], client.offset_encoding)
  notify('canvas-ls: filling the function body…')
  return exec(bufnr, 'canvas.fillBody', { vim.uri_from_bufnr(bufnr), pos }, function(err, result)
    done(bufnr, 'canvas.fillBody', err, result)
    if callback then
      callback(err, result)
    end
  end)
end

--- :CanvasStatus — model, device, dtype, busy.
function M.status(callback)
  local bufnr = api.nvim_get_current_buf()
  local client = M.get_client(bufnr) or vim.lsp.get_clients({ name = M.client_name })[1]
  if not client then
    vim.notify('canvas-ls: no running server', vim.log.levels.WARN)
    return false
  end
  client:request('workspace/executeCommand', { command = 'canvas.status', arguments = {} }, function(err, result)
    if callback then
      return callback(err, result)
    end
    if err then
      vim.notify('canvas-ls: ' .. (err.message or vim.inspect(err)), vim.log.levels.ERROR)
      return
    end
    local r = result or {}
    local function v(x)
      return x ~= nil and x ~= vim.NIL and x or nil
    end
    local parts = { ('canvas-ls %s'):format(v(r.version) or '?') }
    if v(r.model) then
      parts[#parts + 1] = ('model %s on %s (%s)'):format(v(r.model), v(r.device) or '?', v(r.dtype) or '?')
    else
      parts[#parts + 1] = 'model not loaded yet'
    end
    if v(r.randomWeights) then
      parts[#parts + 1] = 'RANDOM WEIGHTS (output is noise)'
    end
    parts[#parts + 1] = r.busy and 'busy' or 'idle'
    if v(r.error) and r.error ~= '' then
      parts[#parts + 1] = 'error: ' .. tostring(r.error)
    end
    vim.notify(table.concat(parts, ', '), vim.log.levels.INFO)
  end, bufnr)
  return true
end

-- Inline completion, re-exported.
function M.accept(bufnr)
  return require('canvas.inline').accept(bufnr)
end
function M.dismiss(bufnr)
  return require('canvas.inline').dismiss(bufnr)
end
function M.trigger(bufnr)
  return require('canvas.inline').trigger(bufnr)
end
function M.suggestion(bufnr)
  return require('canvas.inline').current(bufnr)
end
--- "builtin" (Neovim's vim.lsp.inline_completion, 0.12+) or "plugin" (this plugin's own, 0.11).
function M.inline_mode()
  return require('canvas.inline').mode()
end

-- ---------------------------------------------------------------------------------------------------
-- Setup
-- ---------------------------------------------------------------------------------------------------

function M.setup(opts)
  if vim.fn.has('nvim-0.11') ~= 1 then
    vim.notify('canvas-ls needs Neovim 0.11 or newer (vim.lsp.config)', vim.log.levels.ERROR)
    return
  end
  M.config = vim.tbl_deep_extend('force', vim.deepcopy(defaults), opts or {})
  -- Lists are replaced, not merged.
  for _, key in ipairs({ 'cmd', 'filetypes', 'root_markers' }) do
    if opts and opts[key] ~= nil then
      M.config[key] = opts[key]
    end
  end
  local s = server_settings()
  vim.lsp.config(M.client_name, {
    cmd = M.config.cmd,
    filetypes = M.config.filetypes,
    root_markers = M.config.root_markers,
    init_options = s,
    settings = { canvas = s },
    handlers = { ['canvas/step'] = M.on_step },
  })
  vim.lsp.enable(M.client_name)

  local group = api.nvim_create_augroup('canvas.setup', { clear = true })
  api.nvim_create_autocmd('LspAttach', {
    group = group,
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      if client and client.name == M.client_name then
        require('canvas.inline').attach(args.buf)
      end
    end,
  })
  api.nvim_create_autocmd('LspRequest', { group = group, callback = M._on_lsp_request })
  api.nvim_create_autocmd('LspDetach', {
    group = group,
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      if client and client.name == M.client_name then
        require('canvas.inline').detach(args.buf)
        M.clear_live(args.buf)
      end
    end,
  })
  -- Buffers that were attached before setup() ran (e.g. setup called again).
  for _, client in ipairs(vim.lsp.get_clients({ name = M.client_name })) do
    for bufnr in pairs(client.attached_buffers or {}) do
      require('canvas.inline').attach(bufnr)
    end
  end
  M._setup_done = true
end

return M
