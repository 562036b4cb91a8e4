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
    return bless { headers => {}, %args }, $class;
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

Sends a C<heartbeat> answer: keeps a long job's lease alive, adds no event. Handlers run
one at a time and block the worker's event loop, so a handler that works for minutes
should call C<heartbeat> or C<progress> now and then; doing so also keeps the AMQP
connection busy enough for RabbitMQ's heartbeat check.

=cut
