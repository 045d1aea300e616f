//! One error type for the whole command: a message for humans (printed as one line,
//! `dosql: <message>`), plus the server's error code when a remote call failed, so callers can
//! react to specific refusals (`TXID_CHANGED`, `NOT_EMPTY`).

use std::fmt;

/// What went wrong.
#[derive(Debug)]
pub struct Error {
    message: String,
    /// The `error.code` of a dosql server answer, if this error is one.
    code: Option<String>,
    /// The output's reader went away (`dosql ... | head`): stop quietly, it is no failure.
    broken_pipe: bool,
    /// The server could not be reached or the connection broke: worth a retry.
    transport: bool,
    /// The message already names the target it is about.
    located: bool,
}

/// The command's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error described by `message`.
    pub fn msg(message: impl fmt::Display) -> Error {
        Error {
            message: message.to_string(),
            code: None,
            broken_pipe: false,
            transport: false,
            located: false,
        }
    }

    /// A failure to reach the server or to read its answer (the message names the server).
    pub fn transport(message: impl fmt::Display) -> Error {
        let mut e = Error::msg(message);
        e.transport = true;
        e.located = true;
        e
    }

    /// Marks the message as naming its target already (see [`Error::at`]).
    pub fn located(mut self) -> Error {
        self.located = true;
        self
    }

    /// Prefixes the target (`"<target>: <message>"`) unless the message names it already.
    pub fn at(self, target: impl fmt::Display) -> Error {
        if self.located {
            return self;
        }
        let mut e = self.context(target);
        e.located = true;
        e
    }

    /// Whether the request never got an answer (a retry may succeed).
    pub fn is_transport(&self) -> bool {
        self.transport
    }

    /// A dosql server's refusal with its error code.
    pub fn api(code: &str, message: impl fmt::Display) -> Error {
        Error {
            message: message.to_string(),
            code: Some(code.to_owned()),
            broken_pipe: false,
            transport: false,
            located: false,
        }
    }

    /// The server's error code, if any.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// Whether this is the output pipe closing (not worth a message).
    pub fn is_broken_pipe(&self) -> bool {
        self.broken_pipe
    }

    /// The same error with `context` in front of its message.
    pub fn context(mut self, context: impl fmt::Display) -> Error {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// An error writing the command's output.
    pub fn output(err: std::io::Error) -> Error {
        let mut e = Error::msg(format!("writing output: {err}"));
        e.broken_pipe = err.kind() == std::io::ErrorKind::BrokenPipe;
        e
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Adds what was being done to any displayable error.
pub trait Context<T> {
    /// Prefixes the error with `what` (`"<what>: <error>"`).
    fn context(self, what: impl fmt::Display) -> Result<T>;
    /// Like `context`, built lazily.
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::msg(format!("{what}: {e}")))
    }

    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| Error::msg(format!("{}: {e}", what())))
    }
}

/// Returns early with an [`Error`] built like `format!`.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::Error::msg(format!($($arg)*)))
    };
}

/// `println!` that returns an [`Error`] (a closed pipe included) instead of panicking.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err($crate::error::Error::output)?;
    }};
}
