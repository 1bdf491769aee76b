namespace SpliceTransport;

/// <summary>How <see cref="ConnectionForwardingExtensions.ForwardAsync(Microsoft.AspNetCore.Connections.ConnectionContext, Microsoft.AspNetCore.Connections.ConnectionContext, ForwardOptions?, System.Threading.CancellationToken)"/> moves bytes.</summary>
public enum ForwardSpliceMode
{
    /// <summary>
    /// HAProxy's splice-auto: copy small exchanges (a recv and a sendmsg through a 16 KiB buffer, no pipe), and
    /// splice a stream, from the first read that fills that buffer until three small transfers in a row.
    /// </summary>
    Auto = 0,

    /// <summary>Splice every byte that can be (for bulk transfers known in advance).</summary>
    Always = 1,

    /// <summary>Never splice: copy through the 16 KiB buffer on the event loop.</summary>
    Never = 2,
}

/// <summary>Options of one forward (see <see cref="ConnectionForwardingExtensions"/>).</summary>
public sealed class ForwardOptions
{
    /// <summary>When to splice; see <see cref="ForwardSpliceMode"/>. Default: <see cref="ForwardSpliceMode.Auto"/>.</summary>
    public ForwardSpliceMode SpliceMode { get; set; } = ForwardSpliceMode.Auto;

    /// <summary>
    /// A file to capture the outbound direction into (the bytes the connection sent to the other one), created or
    /// truncated; null: no capture. Lossy by design: see <see cref="ForwardDirectionResult.CaptureDroppedBytes"/>.
    /// </summary>
    public string? OutboundCapturePath { get; set; }

    /// <summary>A file to capture the inbound direction into (the bytes the other connection sent back); null: no capture.</summary>
    public string? InboundCapturePath { get; set; }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid option and its value.</summary>
    internal void Validate()
    {
        if (!Enum.IsDefined(SpliceMode))
        {
            throw new ArgumentOutOfRangeException(nameof(SpliceMode), SpliceMode, $"{nameof(ForwardOptions)}.{nameof(SpliceMode)} is {(int)SpliceMode}, which is not a defined value.");
        }
        ValidatePath(nameof(OutboundCapturePath), OutboundCapturePath);
        ValidatePath(nameof(InboundCapturePath), InboundCapturePath);
        if (OutboundCapturePath is not null && InboundCapturePath is not null
            && string.Equals(Path.GetFullPath(OutboundCapturePath), Path.GetFullPath(InboundCapturePath), StringComparison.Ordinal))
        {
            throw new ArgumentException($"{nameof(ForwardOptions)}.{nameof(OutboundCapturePath)} and {nameof(InboundCapturePath)} are both '{OutboundCapturePath}': each direction needs a file of its own.", nameof(InboundCapturePath));
        }
    }

    private static void ValidatePath(string option, string? path)
    {
        if (path is not null && string.IsNullOrWhiteSpace(path))
        {
            throw new ArgumentException($"{nameof(ForwardOptions)}.{option} is '{path}': give a file path, or null for no capture.", option);
        }
    }
}
