namespace SpliceTransport.Http;

/// <summary>Picks a Content-Type from a file's first bytes. (Full implementation follows.)</summary>
internal static class ContentSniffer
{
    public static string Sniff(ReadOnlySpan<byte> data) => "application/octet-stream";
}
