using System.Runtime.InteropServices;

namespace SpliceTransport.Interop;

/// <summary>
/// A system call failed. The message names the call and the errno (symbol, number and the C library's text),
/// so a log line says exactly what the kernel refused.
/// Internal on purpose: applications catch it as the <see cref="IOException"/> it is, with
/// <see cref="Exception.HResult"/> set to the errno, as the runtime's own Unix I/O errors have it; a public type
/// of ours would add nothing to catch on and would bind the API to how this transport reports errors.
/// </summary>
internal sealed class SyscallException : IOException
{
    /// <summary>Creates the exception for <paramref name="syscall"/> failing with <paramref name="errno"/>.</summary>
    public SyscallException(string syscall, int errno, string? detail = null)
        : base(FormatMessage(syscall, errno, detail))
    {
        Syscall = syscall;
        Errno = errno;
        HResult = errno;
    }

    /// <summary>The name of the system call that failed, such as <c>bind</c> or <c>sendfile</c>.</summary>
    public string Syscall { get; }

    /// <summary>The errno value the call returned.</summary>
    public int Errno { get; }

    private static string FormatMessage(string syscall, int errno, string? detail)
    {
        var text = $"{syscall} failed: {Interop.Errno.Name(errno)} ({errno}): {Marshal.GetPInvokeErrorMessage(errno)}";
        return detail is null ? text : $"{text} ({detail})";
    }
}
