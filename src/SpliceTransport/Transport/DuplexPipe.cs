using System.IO.Pipelines;

namespace SpliceTransport.Transport;

/// <summary>The input and output of a connection as one <see cref="IDuplexPipe"/>.</summary>
internal sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
{
    public PipeReader Input { get; } = input;

    public PipeWriter Output { get; } = output;
}
