package Gateway::Worker::Job;

# What a handler knows about its job, and how it talks back to the gateway while it works.

use strict;
use warnings;

use Carp qw(croak);

our $VERSION = '0.01';

sub new {
    my ($class, %args) = @_;
    for my $field (qw(id op answer)) {
        croak "$field is required" unless defined $args{$field};
    }
    my $self = bless { headers => {}, %args }, $class;
    $self->{trace} = _continue_trace($self->{headers});
    return $self;
}

# W3C Trace Context: the request's traceparent (version 00, ids not all zeros), continued
# with a span id of this worker's own; undef if the request has none or a malformed one.
my $TRACEPARENT = qr/\A00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})\z/;

sub _continue_trace {
    my ($headers) = @_;
    my $parent = $headers->{traceparent};
    return undef unless defined $parent && !ref $parent && $parent =~ $TRACEPARENT;
    my ($trace_id, $parent_id, $flags) = ($1, $2, $3);
    return undef if $trace_id !~ /[^0]/ || $parent_id !~ /[^0]/;
    my $span_id;
    do { $span_id = sprintf '%08x%08x', int rand 2**32, int rand 2**32 } until $span_id =~ /[^0]/;
    my $state = $headers->{tracestate};
    my %trace = (trace_id => $trace_id, traceparent => "00-$trace_id-$span_id-$flags");
    $trace{tracestate} = $state
        if defined $state && !ref $state && length $state <= 512 && $state =~ /\A[\x20-\x7e]+\z/;
    return \%trace;
}

# The trace this job belongs to (32 hex digits), or undef: for your log lines.
sub trace_id { $_[0]{trace} ? $_[0]{trace}{trace_id} : undef }

# The headers every answer for this job carries: the same trace, this worker's span.
sub trace_headers {
    my ($self) = @_;
    return {} unless $self->{trace};
    my %headers = (traceparent => $self->{trace}{traceparent});
    $headers{tracestate} = $self->{trace}{tracestate} if defined $self->{trace}{tracestate};
    return \%headers;
}

sub id      { $_[0]{id} }
sub op      { $_[0]{op} }
sub headers { $_[0]{headers} }

# When the job expires (epoch seconds), if the gateway gave it a deadline.
sub deadline {
    my ($self) = @_;
    my $deadline = $self->{headers}{'x-deadline'};
    return defined $deadline && $deadline =~ /\A[0-9]+(?:\.[0-9]+)?\z/ ? $deadline / 1000 : undef;
}

# How long the gateway waits for a sign of life from a long job, in seconds, if it said.
sub lease_seconds {
    my ($self) = @_;
    my $lease = $self->{headers}{'x-lease-seconds'};
    return defined $lease && $lease =~ /\A[0-9]+(?:\.[0-9]+)?\z/ && $lease > 0 ? 0 + $lease : undef;
}

# A progress event: $data must match the contract's progress schema.
sub progress {
    my ($self, $data) = @_;
    croak 'progress needs its data' if @_ < 2;
    $self->{answer}->(progress => $data);
    return;
}

# Optional: mark the job running (the first progress event does it too).
sub started {
    my ($self) = @_;
    $self->{answer}->(started => undef);
    return;
}

# Keep a long job's lease alive without adding an event.
sub heartbeat {
    my ($self) = @_;
    $self->{answer}->(heartbeat => undef);
    return;
}

# Why the worker stopped waiting for this job ('cancelled' or 'expired'), or undef.
sub cancelled { $_[0]{cancelled} }

# Call $callback->($job, $reason) once the job is cancelled (at once if it already is).
sub on_cancel {
    my ($self, $callback) = @_;
    croak 'on_cancel needs a code reference' unless ref $callback eq 'CODE';
    return $self->_call_back($callback) if defined $self->{cancelled};
    push @{ $self->{on_cancel} }, $callback;
    return;
}

# The worker's side: the gateway cancelled the job, or its deadline passed.
sub _cancel {
    my ($self, $reason) = @_;
    return if defined $self->{cancelled};
    $self->{cancelled} = $reason;
    $self->_call_back($_) for @{ delete $self->{on_cancel} // [] };
    return;
}

# A callback that dies must not take the worker's event loop down with it.
sub _call_back {
    my ($self, $callback) = @_;
    eval { $callback->($self, $self->{cancelled}); 1 }
        or warn "gateway-worker: job $self->{id}: an on_cancel callback died: $@";
    return;
}

1;

__END__

=head1 NAME

Gateway::Worker::Job - the job a Gateway::Worker handler is working on

=head1 SYNOPSIS

    $worker->operation('report.generate' => sub {
        my ($request, $job) = @_;
        for my $n (1 .. $request->{sections}) {
            write_section($n);
            $job->progress({ done => $n, total => $request->{sections} });
        }
        return { ... };
    });

=head1 METHODS

=head2 id, op, headers

The job id (the request's C<correlation_id>), the operation, and the request's AMQP
headers (e.g. C<x-deadline>, C<x-lease-seconds>).

=head2 trace_id, trace_headers

The W3C trace the request belongs to: C<trace_id> is its 32 hex digits (undef if the
request carried no valid C<traceparent>), for your log lines. C<trace_headers> is what
every answer for the job carries: C<traceparent> with the same trace id and this worker's
own span id, and C<tracestate> unchanged.

=head2 deadline

When the job expires, in epoch seconds (from C<x-deadline>), or undef.

=head2 lease_seconds

The job's lease (from C<x-lease-seconds>), or undef.

=head2 progress($data)

Sends a C<progress> answer: one progress event for clients. C<$data> must match the
contract's C<progress> schema (the gateway drops one that does not).

=head2 started

Sends a C<started> answer: the job is running.

=head2 heartbeat

Sends a C<heartbeat> answer: keeps a long job's lease alive, adds no event. The worker
sends them for you (every third of the lease) while a handler's condvar is pending; a
handler that blocks the event loop for long should call it now and then itself.

=head2 cancelled

Undef while the worker waits for the job; C<'cancelled'> once the gateway has cancelled
it (a notice on C<gateway.cancel>), C<'expired'> once its deadline has passed. From then
on the worker sends nothing for the job, whatever the handler still does.

=head2 on_cancel(sub { my ($job, $reason) = @_; ... })

Calls the code once the job is cancelled or expired (at once if it already is): the place
to stop timers, kill a child process, and so on. A callback that dies is logged.

=cut
