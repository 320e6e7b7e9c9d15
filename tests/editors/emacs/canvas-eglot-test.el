;;; canvas-eglot-test.el --- eglot against canvas-ls serve, in `emacs --batch -Q'  -*- lexical-binding: t -*-

;; Environment: CANVAS_LS (the executable), CANVAS_MODEL (a checkpoint directory), CANVAS_FILE (a
;; Python file: a hole at the end of line 6 "    return ", a function body at line 10), CANVAS_OUT
;; (where to write the JSON report). Exits 0 after writing the report, 1 on an error (also reported).

(require 'package)
(require 'json)

(unless (require 'eglot nil t)
  ;; Emacs 28 with Debian's elpa-eglot: activate the system ELPA packages that -Q skipped.
  (package-initialize)
  (unless (require 'eglot nil t)
    (dolist (dir (file-expand-wildcards "/usr/share/emacs/site-lisp/elpa/*"))
      (add-to-list 'load-path dir))
    (unless (require 'eglot nil t)
      (princ "no eglot\n")
      (kill-emacs 3))))

(when (getenv "CANVAS_PROBE") ; only: is eglot there?
  (princ (format "eglot-ok %s\n" emacs-version))
  (kill-emacs 0))

(defvar canvas-report nil "Alist written to CANVAS_OUT as JSON.")

(defun canvas-note (key value)
  (setq canvas-report (cons (cons key value) (assq-delete-all key canvas-report))))

(defun canvas-finish (code)
  (canvas-note 'emacs_version emacs-version)
  (with-temp-file (getenv "CANVAS_OUT")
    (insert (json-encode canvas-report)))
  (kill-emacs code))

(defun canvas-wait (what pred seconds)
  "Process events until PRED is non-nil; signal an error after SECONDS."
  (let ((deadline (+ (float-time) seconds)) value)
    (while (and (not (setq value (funcall pred))) (< (float-time) deadline))
      (accept-process-output nil 0.1))
    (or value (error "Timed out waiting for %s" what))))

(defun canvas-run ()
  (let* ((exe (getenv "CANVAS_LS"))
         (file (getenv "CANVAS_FILE"))
         (opts (list :modelPath (getenv "CANVAS_MODEL") :maxSteps 8 :seed 1
                     :singleLineSlots [16] :multiLineSlots [32] :bodySlots 32 :device "cpu"
                     ;; random weights: the fewest-errors step candidate is mostly the empty fill
                     :stepCandidates 0))
         server uri)
    ;; What a user puts in their init file (see editors/README-editors.md).
    (setq eglot-server-programs
          `((python-mode . (,exe "serve" :initializationOptions ,opts))))
    (setq eglot-confirm-server-initiated-edits nil) ; canvas.fill* apply their edits via applyEdit
    (setq eglot-sync-connect 30)
    (find-file file)
    (python-mode)
    (apply #'eglot (eglot--guess-contact))
    (setq server (canvas-wait "eglot to connect" #'eglot-current-server 60))
    (setq uri (plist-get (eglot--TextDocumentIdentifier) :uri))
    (canvas-note 'capabilities_inline
                 (and (plist-get (eglot--capabilities server) :inlineCompletionProvider) t))
    ;; The model loads after `initialized'; canvas.status says when it is there.
    (let (status)
      (canvas-wait "the model to load"
                   (lambda ()
                     (setq status (jsonrpc-request server :workspace/executeCommand
                                                   '(:command "canvas.status" :arguments [])))
                     (or (plist-get status :model) (progn (sleep-for 0.2) nil)))
                   120)
      (canvas-note 'status status))
    ;; textDocument/inlineCompletion at the end of "    return " (line 6, 0-based 5)
    (let ((items (jsonrpc-request server :textDocument/inlineCompletion
                                  `(:textDocument (:uri ,uri) :position (:line 5 :character 11)
                                                  :context (:triggerKind 1))
                                  :timeout 120)))
      (canvas-note 'inline_items (if (vectorp items) items (vconcat items)))
      (canvas-note 'inline_type (if (or (vectorp items) (null items)) "list" (format "%S" (type-of items)))))
    ;; canvas.fillBody inside scale(): the server applies its edit through workspace/applyEdit;
    ;; retry with other seeds while the random-weight model's fill does not survive the syntax checks.
    (let ((before (buffer-substring-no-properties (point-min) (point-max)))
          (seed 1) result)
      (canvas-note 'before_body before)
      (while (and (<= seed 8)
                  (progn
                    (setq result (jsonrpc-request server :workspace/executeCommand
                                                  `(:command "canvas.fillBody"
                                                             :arguments [,uri (:line 9 :character 4)])
                                                  :timeout 120))
                    (not (eq (plist-get result :applied) t))))
        (setq seed (1+ seed))
        (jsonrpc-notify server :workspace/didChangeConfiguration
                        `(:settings (:canvas (:seed ,seed)))))
      (canvas-note 'body_attempts seed)
      (canvas-note 'body_result result)
      ;; the edit arrives as a request before the command's answer; let eglot finish applying it
      (canvas-wait "the body edit" (lambda () (not (equal before (buffer-string)))) 10)
      (canvas-note 'after_body (buffer-substring-no-properties (point-min) (point-max))))
    (ignore-errors (eglot-shutdown server))))

(condition-case err
    (progn (canvas-run) (canvas-finish 0))
  (error
   (canvas-note 'error (error-message-string err))
   (canvas-finish 1)))

;;; canvas-eglot-test.el ends here
