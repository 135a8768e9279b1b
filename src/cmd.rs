//! The command value that flows from the source side to the writers: a Redis command as its
//! argument vector (`args[0]` is the name), tagged with the database it applies to.

use bytes::{BufMut, Bytes, BytesMut};

/// One Redis command as it will be sent to a target: name first, then arguments, all binary-safe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmd {
    pub args: Vec<Bytes>,
}

impl Cmd {
    /// Builds a command from anything that turns into byte strings.
    pub fn new<I, A>(args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<Bytes>,
    {
        Cmd {
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    /// The command name as written (not case-normalised).
    pub fn name(&self) -> &[u8] {
        self.args.first().map(|b| b.as_ref()).unwrap_or(b"")
    }

    /// True when the command name equals `upper` (given in upper case), ignoring ASCII case.
    pub fn is(&self, upper: &str) -> bool {
        self.name().eq_ignore_ascii_case(upper.as_bytes())
    }

    /// The command name in upper case, escaped (see [`crate::escape`]) and cut at 64 bytes: safe
    /// for logs. Metric labels use [`crate::observe::telemetry::command_label`] instead.
    pub fn name_upper(&self) -> String {
        crate::escape::text_limited(self.name().to_ascii_uppercase(), 64)
    }

    /// Appends the RESP encoding (an array of bulk strings) of this command to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.reserve(16 + self.args.iter().map(|a| a.len() + 16).sum::<usize>());
        encode_parts(self.args.len(), self.args.iter().map(|a| &a[..]), buf);
    }

    /// Size in bytes of the RESP encoding, without encoding.
    pub fn encoded_len(&self) -> usize {
        fn digits(mut n: usize) -> usize {
            let mut d = 1;
            while n >= 10 {
                n /= 10;
                d += 1;
            }
            d
        }
        3 + digits(self.args.len())
            + self
                .args
                .iter()
                .map(|a| 5 + digits(a.len()) + a.len())
                .sum::<usize>()
    }
}

/// A command with the source database it belongs to. Writers insert `SELECT` as needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbCmd {
    pub db: u32,
    pub cmd: Cmd,
}

/// Memory an argument holds beyond its encoded bytes: its `Bytes` handle in the command's vector
/// and its own allocation. A `HSET` of 512 small fields holds about 4× its encoded size.
pub const ARG_MEMORY: usize = 48;

impl DbCmd {
    /// The memory this command holds, estimated: its encoded size plus [`ARG_MEMORY`] per
    /// argument. Every byte bound on queued or unacknowledged commands counts this.
    pub fn mem_bytes(&self) -> usize {
        self.cmd.encoded_len() + self.cmd.args.len() * ARG_MEMORY
    }
}

/// Appends the RESP encoding of a command of `n` arguments, `args`, to `buf` (a command built
/// from borrowed parts, without a [`Cmd`]).
pub fn encode_parts<'a>(n: usize, args: impl IntoIterator<Item = &'a [u8]>, buf: &mut BytesMut) {
    let mut itoa = itoa::Buffer::new();
    buf.put_u8(b'*');
    buf.put_slice(itoa.format(n).as_bytes());
    buf.put_slice(b"\r\n");
    for a in args {
        buf.put_u8(b'$');
        buf.put_slice(itoa.format(a.len()).as_bytes());
        buf.put_slice(b"\r\n");
        buf.put_slice(a);
        buf.put_slice(b"\r\n");
    }
}

/// Builds a [`Cmd`] from a list of expressions convertible to [`Bytes`]-like arguments:
/// `cmd!["SET", key.clone(), value]`. String literals and `Bytes` both work.
#[macro_export]
macro_rules! cmd {
    ($($arg:expr),+ $(,)?) => {
        $crate::cmd::Cmd { args: vec![$($crate::cmd::arg($arg)),+] }
    };
}

/// Converts one argument for [`cmd!`]: literals, owned strings, byte vectors, `Bytes`, integers.
pub fn arg<A: IntoArg>(a: A) -> Bytes {
    a.into_arg()
}

/// Anything that can be a command argument.
pub trait IntoArg {
    fn into_arg(self) -> Bytes;
}
impl IntoArg for Bytes {
    fn into_arg(self) -> Bytes {
        self
    }
}
impl IntoArg for &Bytes {
    fn into_arg(self) -> Bytes {
        self.clone()
    }
}
impl IntoArg for &'static str {
    fn into_arg(self) -> Bytes {
        Bytes::from_static(self.as_bytes())
    }
}
impl IntoArg for String {
    fn into_arg(self) -> Bytes {
        Bytes::from(self)
    }
}
impl IntoArg for Vec<u8> {
    fn into_arg(self) -> Bytes {
        Bytes::from(self)
    }
}
impl IntoArg for &[u8] {
    fn into_arg(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}
macro_rules! int_arg {
    ($($t:ty),*) => {$(
        impl IntoArg for $t {
            fn into_arg(self) -> Bytes {
                Bytes::copy_from_slice(itoa::Buffer::new().format(self).as_bytes())
            }
        }
    )*};
}
int_arg!(i64, u64, i32, u32, usize, u8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_resp_array() {
        let c = cmd!["SET", "k", Bytes::from_static(b"v\r\n"), 42i64];
        let mut b = BytesMut::new();
        c.encode(&mut b);
        assert_eq!(
            &b[..],
            b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$2\r\n42\r\n"
        );
        assert_eq!(c.encoded_len(), b.len());
        assert!(c.is("set"));
    }
}
