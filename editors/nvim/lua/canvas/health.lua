-- :checkhealth canvas
local M = {}

local health = vim.health

local function run(cmd, timeout_ms)
  local ok, proc = pcall(vim.system, cmd, { text = true })
  if not ok then
    return nil, tostring(proc)
  end
  local res = proc:wait(timeout_ms)
  return res
end

local function lines_of(s)
  local out = {}
  for line in vim.gsplit(s or '', '\n', { plain = true, trimempty = true }) do
    out[#out + 1] = line
  end
  return out
end

--- canvas-ls check arguments from the configured settings (model, device, dtype).
local function check_args(settings)
  local args = {}
  if type(settings.modelPath) == 'string' and settings.modelPath ~= '' then
    vim.list_extend(args, { '--model', vim.fn.expand(settings.modelPath) })
  end
  if type(settings.device) == 'string' and settings.device ~= '' then
    vim.list_extend(args, { '--device', settings.device })
  end
  if type(settings.dtype) == 'string' and settings.dtype ~= '' then
    vim.list_extend(args, { '--dtype', settings.dtype })
  end
  return args
end

function M.check()
  local canvas = require('canvas')
  local cfg = canvas.config

  health.start('canvas-ls: Neovim')
  local v = vim.version()
  local vs = ('%d.%d.%d%s'):format(v.major, v.minor, v.patch, v.prerelease and ('-' .. tostring(v.prerelease)) or '')
  if vim.fn.has('nvim-0.11') == 1 then
    health.ok('Neovim ' .. vs)
  else
    health.error('Neovim ' .. vs .. ': canvas-ls needs 0.11 or newer (vim.lsp.config)')
  end
  local inline = require('canvas.inline')
  local mode = inline.mode()
  if not cfg.inline.enabled then
    health.info('inline completion: off (inline.enabled = false)')
  elseif mode == 'builtin' then
    health.ok("inline completion: Neovim's built-in vim.lsp.inline_completion (0.12+)")
  else
    local why = vim.lsp.inline_completion and 'chosen with inline.mode = "plugin"' or 'this Neovim has no vim.lsp.inline_completion'
    health.ok("inline completion: the plugin's own ghost text (" .. why .. ')')
  end
  if not canvas._setup_done then
    health.warn('require("canvas").setup() has not been called', { 'call it from your config (see :help canvas)' })
  end

  health.start('canvas-ls: server')
  local cmd = cfg.cmd
  if type(cmd) ~= 'table' or #cmd == 0 then
    health.error('cmd is not a list: ' .. vim.inspect(cmd))
    return
  end
  local exe = vim.fn.exepath(vim.fn.expand(cmd[1]))
  if exe == '' then
    health.error(('server executable not found: %s'):format(cmd[1]), {
      'install canvas-ls (make demo in its repository creates .venv/bin/canvas-ls)',
      'and set cmd = { "/path/to/canvas-ls/.venv/bin/canvas-ls", "serve" } in setup()',
    })
    return
  end
  local res, err = run({ exe, '--version' }, 30000)
  if not res then
    health.error(('%s --version failed: %s'):format(exe, tostring(err)))
    return
  end
  local version = vim.trim((res.stdout or '') .. (res.stderr or ''))
  if res.code == 0 then
    health.ok(('server: %s (%s)'):format(version ~= '' and version or '?', exe))
  else
    health.error(('%s --version exited %d: %s'):format(exe, res.code, version))
  end

  local clients = vim.lsp.get_clients({ name = canvas.client_name })
  if #clients > 0 then
    local n = 0
    for _, c in ipairs(clients) do
      n = n + vim.tbl_count(c.attached_buffers or {})
    end
    health.ok(('running: %d client(s), attached to %d buffer(s)'):format(#clients, n))
  else
    health.info('no canvas-ls client running yet (it starts when you open a file of a configured filetype)')
  end

  health.start('canvas-ls: model and device (canvas-ls check)')
  local settings = canvas.config.settings or {}
  local check_cmd = vim.list_extend({ exe, 'check' }, check_args(settings))
  local cres, cerr = run(check_cmd, 180000)
  if not cres then
    health.error('canvas-ls check could not run: ' .. tostring(cerr))
    return
  end
  if cres.code == nil or cres.signal == 9 or cres.signal == 15 then
    health.error('canvas-ls check did not finish within 180 s')
    return
  end
  local out = lines_of(cres.stdout)
  local model, device
  for _, line in ipairs(out) do
    model = model or line:match('^model: (.*)$')
    device = device or line:match('^cuda: (.*)$')
  end
  if model then
    health.info('model: ' .. model)
  end
  if device then
    health.info('cuda: ' .. device)
  end
  for _, line in ipairs(out) do
    if line:match('PROBLEM') then
      health.warn(line)
    elseif line:match('^%s+loaded') then
      health.info(vim.trim(line))
    end
  end
  if cres.code == 0 then
    if (cres.stdout or ''):match('random weights') or (model and model:match('random%-weight')) then
      health.warn('the model has random weights: fills are noise', { 'set settings.modelPath to a DiffusionGemma checkpoint' })
    end
    health.ok('canvas-ls check: ' .. (out[#out] or 'ok'))
  else
    local detail = table.concat(out, '\n')
    local stderr = vim.trim(cres.stderr or '')
    if stderr ~= '' then
      detail = detail .. '\n' .. stderr
    end
    health.error(('canvas-ls check exited %d:\n%s'):format(cres.code, detail), {
      'run it yourself: ' .. table.concat(check_cmd, ' '),
    })
  end
end

return M
