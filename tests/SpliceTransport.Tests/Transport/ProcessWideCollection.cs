namespace SpliceTransport.Tests.Transport;

/// <summary>
/// Tests that measure the whole process (descriptor count, thread names). xunit runs a collection with
/// parallelization disabled on its own, after the parallel ones, so no other test's sockets or event
/// loops appear in the measurements.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ProcessWideCollection
{
    public const string Name = "Process-wide resources";
}
