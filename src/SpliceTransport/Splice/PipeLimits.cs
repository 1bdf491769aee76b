using System.Globalization;

namespace SpliceTransport.Splice;

/// <summary>
/// What the kernel allows a pipe: /proc/sys/fs/pipe-max-size, read once per process. A process without
/// CAP_SYS_RESOURCE that asks F_SETPIPE_SZ for more gets EPERM; the pool never asks for more, whatever its
/// privileges, because the limit is the administrator's statement of what one pipe may pin.
/// </summary>
internal static class PipeLimits
{
    /// <summary>
    /// The kernel's default pipe-max-size (1 MiB, since Linux 2.6.35), assumed when /proc cannot be read
    /// (a sandbox without /proc): asking for it is refused at worst, and a refusal only means copying.
    /// </summary>
    public const int KernelDefaultMaxSize = 1024 * 1024;

    private const string MaxSizePath = "/proc/sys/fs/pipe-max-size";

    /// <summary>
    /// /proc/sys/fs/pipe-max-size as this process first read it. Read once: the value changes only when an
    /// administrator writes it, and a pipe sized under an older, larger value is refused (EPERM) and counted,
    /// which says what changed.
    /// </summary>
    public static int MaxSize { get; } = ReadMaxSize();

    private static int ReadMaxSize()
    {
        try
        {
            string text = File.ReadAllText(MaxSizePath).Trim();
            return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int size) && size > 0
                ? size
                : KernelDefaultMaxSize;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return KernelDefaultMaxSize;
        }
    }
}
